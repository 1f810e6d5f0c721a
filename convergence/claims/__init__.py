"""The seed papers' claims, judged from stored results.

Layers, bottom up (a module imports only those below it):

* ``findings``: statuses, findings and the rules that turn numbers into verdicts;
* ``context``: what a judge sees (a claim's stored records, fitted once, and its studies);
* ``judge_rates`` (claims 1, 2, 3, 9), ``judge_errors`` (4, 5), ``judge_speed`` (6, 7),
  ``judge_annealed`` (8), ``learned`` (10): one judge per claim family; ``studies``: the side
  computations that are not sweeps over T, stored as JSON;
* ``records``: the claims as data, each holding its judge and studies;
* ``report``: runs, judges, draws and writes the report.
"""

from convergence.claims.findings import ClaimResult, ClaimStatus, Finding, Status
from convergence.claims.records import CLAIMS, CONFIG_DIR, PaperClaim, get_claim, quick_config

__all__ = [
    "CLAIMS",
    "CONFIG_DIR",
    "ClaimResult",
    "ClaimStatus",
    "Finding",
    "PaperClaim",
    "Status",
    "get_claim",
    "quick_config",
]
