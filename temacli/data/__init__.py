"""Datasets, by job: ``read`` (inputs), ``build`` (filter, index, split), ``negatives`` (the stored
candidates), ``stats`` (Table I), ``write`` (the folder), ``split`` (the ``data split`` stage and its public
names), ``formats`` (importers of published splits, above the rest) and ``dataset`` (the folder's
contracts and reader)."""
