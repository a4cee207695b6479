"""The annotator's queue: leasing tasks (leasing), skipping and lease expiry (release), and submitting
judgments and demonstrations (submission), all on the row lock and state checks of locking; a
judgment's answer travels as one Verdict (verdict). This package re-exports their public names.

Concurrency model (Postgres): the pick locks one candidate task row with FOR UPDATE SKIP LOCKED
and re-checks its seat count on the locked version, so two annotators never take the last seat
of the same task; the unique (task, annotator) constraint backs "never the same task twice".
Lock order is always assignment before task, so submit, skip and expiry cannot deadlock.

Counters on ComparisonTask (judgments_count, active_assignments) replace COUNT queries: a task
has a free seat while judgments_count + active_assignments < overlap.

Prefetch: an annotator holds at most two active assignments, the one on screen and the next
one. The second is leased with a doubled lease, so once it is promoted it still has at least
one full lease of time left, with no extra UPDATE on the hot path.
"""

from labeling.services.assignment.leasing import NextResult, shown_order_for, task_assign_next
from labeling.services.assignment.locking import AssignmentConflict
from labeling.services.assignment.release import assignment_skip, assignments_expire_sweep, assignments_release
from labeling.services.assignment.submission import demonstration_submit, judgment_correct, judgment_submit
from labeling.services.assignment.verdict import Verdict, ranking_likert_contradiction

__all__ = [
    "AssignmentConflict", "NextResult", "Verdict", "assignment_skip", "assignments_expire_sweep", "assignments_release",
    "demonstration_submit", "judgment_correct", "judgment_submit", "ranking_likert_contradiction", "shown_order_for",
    "task_assign_next",
]
