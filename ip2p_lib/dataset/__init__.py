"""The edit dataset on disk: shards (resumable writer), generated and oracle pairs, readers of the
authors' layout, and the training loader."""
