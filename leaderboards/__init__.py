"""Leaderboards rebuilt from result files: `build_leaderboards(results_dir, out_dir) -> dict`.

`collate` turns `results/*/summary.json` + `curve.csv` into per-task tables and plots; `published` holds
the numbers reported by the MaskGRPO paper, kept in their own table.
"""

from leaderboards.collate import build_leaderboards  # noqa: F401
