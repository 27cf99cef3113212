"""Jobs: model calls and thread turns run in the background, durably, with their money held from submission."""
