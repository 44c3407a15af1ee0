"""The edit dataset on disk: shards (resumable writer), readers, and the training loader."""
