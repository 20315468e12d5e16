"""Token layouts: how several parallel token streams (codebooks, scales, frames) become one sequence."""

from genloom.core.layout.codebook_patterns import (
    CodebookPattern,
    DelayPattern,
    ParallelPattern,
    PatternProvider,
    PatternSequence,
    UnrolledPattern,
)

__all__ = [
    "CodebookPattern",
    "DelayPattern",
    "ParallelPattern",
    "PatternProvider",
    "PatternSequence",
    "UnrolledPattern",
]
