"""Search over every stored message (see README, "Search")."""
