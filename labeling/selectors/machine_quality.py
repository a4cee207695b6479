"""Machine annotators measured against people, on the items both judged.

An item is a response pair of a task that the machine and at least one person judged (a K-way ranking
gives every pair of its responses, as labeling.stats.ranking_outcomes expands it; outcome +1 the lower
id won, -1 it lost, 0 a tie). Per machine source ("machine:<name>"):

- agreement with the human majority (labeling.stats.majority_vote: a tie vote blocks a majority, and no
  strict majority counts as a tie): `with_ties` over every shared item, a tie matching only a tie;
  `without_ties` over the items where both the machine and the majority decided;
- Cohen's kappa between the machine and the human majority, ties as a third label;
- the ceiling: InstructGPT pairwise agreement between the people on the same items (ties left out, as
  labeling.stats.pairwise_agreement counts it), comparable to `without_ties`;
- order-swap consistency: the share of all its judgments whose two orders agreed on every pair
  (Judgment.machine["consistent"]);
- length bias: of the decided shared items whose responses differ in length, the share where the longer
  response won, for the machine and for the people's votes on the same items.

Each row also has `versions`: the same figures per model version that judged for that machine
(Judgment.machine["version"], the version id; None, last, for a judgment that names none), by id,
so a machine whose version was changed is measured before and after.
"""
from __future__ import annotations

from collections import defaultdict
from typing import Any

from django.db.models.functions import Length

from labeling import stats
from labeling.models import MACHINE_SOURCE_PREFIX, Project, Response
from labeling.selectors.quality import CHUNK, _votes, current_judgments, judgment_rows

Pair = tuple[int, int]


def machine_quality_report(*, project: Project) -> list[dict[str, Any]]:
    """One row per machine source that judged in the project, by source name, each with its `versions`."""
    # Per source, and per (source, version): the outcome per pair (a later judgment's stands) and
    # [consistent judgments, judgments].
    machine: dict[Any, dict[Pair, int]] = defaultdict(dict)
    consistency: dict[Any, list[int]] = defaultdict(lambda: [0, 0])
    versions: dict[str, set] = defaultdict(set)
    rows = (current_judgments(project=project, human_only=False, machines=True)
            .filter(source__startswith=MACHINE_SOURCE_PREFIX).order_by("id")
            .values_list("source", "ranking", "machine"))
    for source, ranking, meta in rows.iterator(CHUNK):
        version = (meta or {}).get("version")
        version = version if isinstance(version, int) and not isinstance(version, bool) else None
        versions[source].add(version)
        for key in (source, (source, version)):
            machine[key].update(stats.ranking_outcomes(ranking or []))
            consistency[key][0] += int(bool((meta or {}).get("consistent")))
            consistency[key][1] += 1
    if not machine:
        return []
    humans = {pair: {who: row.outcomes[pair] for who, row in by.items()}
              for pair, by in _votes(judgment_rows(project=project, human_only=True)).items()}
    shared_ids = {rid for votes in machine.values() for pair in votes if pair in humans for rid in pair}
    lengths = _lengths(shared_ids)

    def figures(key) -> dict[str, Any]:
        return {"judgments": consistency[key][1], "order_consistency": stats.Share(*consistency[key]).rate,
                **machine_versus_humans(machine=machine[key], humans=humans, lengths=lengths)}

    return [{"source": source, **figures(source),
             "versions": [{"version": v, **figures((source, v))} for v in sorted(versions[source], key=lambda v: (v is None, v or 0))]}
            for source in sorted(versions)]


def machine_versus_humans(*, machine: dict[Pair, int], humans: dict[Pair, dict[Any, int]],
                          lengths: dict[int, int]) -> dict[str, Any]:
    """The measures of one machine on the items it shares with the people (see the module docstring):
    machine is its outcome per item, humans each person's outcome per item, lengths each response's."""
    shared = sorted(pair for pair in machine if humans.get(pair))
    majority = {pair: stats.majority_vote(list(humans[pair].values())).winner or 0 for pair in shared}
    decided = [pair for pair in shared if machine[pair] != 0 and majority[pair] != 0]
    ceiling, _ = stats.pairwise_agreement({pair: humans[pair] for pair in shared})
    machine_longer = _longer_share(((machine[pair], pair) for pair in shared), lengths)
    human_longer = _longer_share(((outcome, pair) for pair in shared for outcome in humans[pair].values()), lengths)
    return {
        "items": len(shared),
        "agreement_with_ties": stats.Share(sum(machine[p] == majority[p] for p in shared), len(shared)).rate,
        "agreement_without_ties": stats.Share(sum(machine[p] == majority[p] for p in decided), len(decided)).rate,
        "decided_items": len(decided),
        "kappa": stats.cohen_kappa([machine[p] for p in shared], [majority[p] for p in shared]),
        "human_agreement": ceiling.rate, "human_pairs_compared": ceiling.total,
        "longer_wins": machine_longer.rate, "longer_decided": machine_longer.total,
        "human_longer_wins": human_longer.rate, "human_longer_decided": human_longer.total,
    }


def _longer_share(votes, lengths: dict[int, int]) -> stats.Share:
    """Of the (outcome, (a, b)) votes that decided a pair of responses of different lengths, how many
    the longer one won."""
    hits = total = 0
    for outcome, (a, b) in votes:
        if outcome == 0 or lengths.get(a) == lengths.get(b):
            continue
        winner = a if outcome == 1 else b
        hits += int(lengths[winner] == max(lengths[a], lengths[b]))
        total += 1
    return stats.Share(hits, total)


def _lengths(response_ids: set[int]) -> dict[int, int]:
    ids, out = sorted(response_ids), {}
    for start in range(0, len(ids), CHUNK):
        out.update(Response.objects.filter(pk__in=ids[start:start + CHUNK]).annotate(n=Length("text"))
                   .values_list("pk", "n"))
    return out
