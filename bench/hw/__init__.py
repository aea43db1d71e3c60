"""Hardware that exists only for the synthesis comparisons (not part of the product units)."""
