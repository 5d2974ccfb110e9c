"""The repository: backends, packs, index, snapshots, trees, backup and restore."""
