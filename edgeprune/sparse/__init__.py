"""Block-sparse weights: the BSR format and the ops that skip zero blocks."""
