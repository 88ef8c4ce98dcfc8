"""What plugins implement and how they load: the hook specifications, the one registry type, the
plugin manager and its typed registries, the contracts of plugin products (transports, runtimes,
executors) and the block-splitter contract. Nothing here knows a model, a path or a search.

Modules are imported one by one (``codenn.contracts.plugins``...): this package's own import is
kept free of torch so that ``from codenn import hookimpl`` stays cheap.
"""
