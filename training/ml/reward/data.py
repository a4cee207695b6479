"""What the reward model reads. A group is one judgment {"prompt", "responses": [K], "ranking":
[[best...], [next...], ...]}, or a label model's consensus over a task's judgments that also has
"targets": [[i, j, P(i beats j)], ...] (training.dataset); the prompt split keeps a prompt on one side; PairEncoder tokenizes
(prompt, response) and cuts the prompt from the LEFT so the response survives; batches flatten the
K responses of each judgment and index its comparisons into them."""
from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any, Iterable, Sequence

import torch
from tokenizers import Encoding, Tokenizer
from transformers import PreTrainedTokenizerBase

from labeling.ranking import ranking_pairs
from labeling.splits import prompt_is_held_out

# ----------------------------------------------------------------------------------------------
# Groups and the prompt split


def groups_from_pairs(records: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """{prompt, chosen, rejected} records -> K=2 groups ranked [[0], [1]]."""
    return [
        {"prompt": r["prompt"], "responses": [r["chosen"], r["rejected"]], "ranking": [[0], [1]]}
        for r in records
    ]


def group_comparisons(group: dict[str, Any]) -> list[tuple[int, int, float]]:
    """(winner, loser, P(winner beats loser)) for every comparison of a group: its ranking's pairs
    (labeling.ranking's one rule) at probability 1, or its soft targets turned so that the winner is
    the side the label model favours. A target of exactly 0.5 says nothing about the order, as a
    tie in a ranking says nothing, so it gives no comparison either."""
    if group.get("targets") is None:
        return [(w, lo, 1.0) for w, lo in ranking_pairs(group["ranking"])]
    out = []
    for i, j, p in group["targets"]:
        if p != 0.5:
            out.append((int(i), int(j), float(p)) if p > 0.5 else (int(j), int(i), 1.0 - float(p)))
    return out


def is_validation(item: dict[str, Any], val_fraction: float, seed: int) -> bool:
    """Whether a group or {prompt, ...} record is held out for validation, when the caller did not
    split (the bench scripts' files, whose ids name records, not prompts): the product's rule,
    labeling.splits, keyed by the prompt text and salted by the seed, so a prompt is never on both
    sides. The product splits by the prompt's external id itself and passes val_groups."""
    return prompt_is_held_out(item["prompt"], fraction=val_fraction, seed=str(seed))


def split_by_prompt(groups: Sequence[dict], val_fraction: float, seed: int) -> tuple[list[dict], list[dict]]:
    """(train, validation)."""
    train, val = [], []
    for g in groups:
        (val if is_validation(g, val_fraction, seed) else train).append(g)
    return train, val


# ----------------------------------------------------------------------------------------------
# Truncation: keep the response, cut the prompt from the LEFT (the end of a dialogue matters most)


@dataclass
class Encoded:
    input_ids: list[int]
    token_type_ids: list[int]
    truncated: bool
    response_tokens: int = 0  # the response's own tokens as the model sees them (after truncation, no specials)


class PairEncoder:
    """Tokenizes (prompt, response) with the tokenizer's own pair template (e.g. [CLS] p [SEP] r [SEP]).

    Uses the fast backend directly because transformers 5 dropped the id-level helpers
    (build_inputs_with_special_tokens) we would need to re-add specials after cutting.
    """

    def __init__(self, tokenizer: PreTrainedTokenizerBase, max_length: int, add_eos: bool):
        self.backend = Tokenizer.from_str(tokenizer.backend_tokenizer.to_str())
        self.backend.no_padding()  # the saved tokenizer.json may carry fixed padding
        self.backend.no_truncation()
        self.max_length = max_length
        self.eos_id = tokenizer.eos_token_id if add_eos else None
        self.specials = self.backend.num_special_tokens_to_add(True)
        if max_length <= self.specials + 1 + (self.eos_id is not None):
            raise ValueError(f"max_length={max_length} leaves no room for a response")

    def encode(self, prompts: Sequence[str], responses: Sequence[str]) -> list[Encoded]:
        p_encs = self.backend.encode_batch(list(prompts), add_special_tokens=False)
        r_encs = self.backend.encode_batch(list(responses), add_special_tokens=False)
        return [self._join(p, r) for p, r in zip(p_encs, r_encs)]

    def _join(self, p: Encoding, r: Encoding) -> Encoded:
        budget = self.max_length - self.specials - (self.eos_id is not None)
        truncated = len(p) + len(r) > budget
        if len(r) > budget:  # the response alone is too long: keep its beginning, drop the prompt
            r.truncate(budget, direction="right")
            p.truncate(0)
        elif truncated:
            p.truncate(budget - len(r), direction="left")
        e = self.backend.post_process(p, r, add_special_tokens=True)
        ids, types = list(e.ids), list(e.type_ids)
        if self.eos_id is not None and (not ids or ids[-1] != self.eos_id):
            ids.append(self.eos_id)
            types.append(types[-1] if types else 0)
        return Encoded(ids, types, truncated, len(r))


def pad_id_of(tokenizer: PreTrainedTokenizerBase) -> int:
    """The id that pads a batch: the tokenizer's pad token, else its end-of-sequence token, else 0."""
    for candidate in (tokenizer.pad_token_id, tokenizer.eos_token_id, 0):
        if candidate is not None:
            return candidate
    return 0


def collate(seqs: Sequence[Encoded], pad_id: int, device: torch.device) -> dict[str, torch.Tensor]:
    """Right-pad to the longest sequence. Shape: -> input_ids, attention_mask, token_type_ids [N, T],
    response_tokens [N] (float: the length the ODIN losses correlate with)."""
    width = max(len(s.input_ids) for s in seqs)
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    types = torch.zeros((len(seqs), width), dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for i, s in enumerate(seqs):
        n = len(s.input_ids)
        ids[i, :n] = torch.tensor(s.input_ids)
        types[i, :n] = torch.tensor(s.token_type_ids)
        mask[i, :n] = 1
    lengths = torch.tensor([float(s.response_tokens) for s in seqs])
    return {"input_ids": ids.to(device), "attention_mask": mask.to(device), "token_type_ids": types.to(device),
            "response_tokens": lengths.to(device)}


# ----------------------------------------------------------------------------------------------
# Batching


@dataclass
class TokenizedGroup:
    responses: list[Encoded]
    comparisons: list[tuple[int, int]]
    targets: list[float]  # P(winner beats loser) per comparison: 1.0 from a ranking
    weight: float = 1.0  # the group's weight in the loss: a machine record's machine_weight (training.dataset)

    @property
    def length(self) -> int:
        return max(len(r.input_ids) for r in self.responses)


def tokenize_groups(groups: Sequence[dict], encoder: PairEncoder) -> list[TokenizedGroup]:
    prompts = [g["prompt"] for g in groups for _ in g["responses"]]
    responses = [r for g in groups for r in g["responses"]]
    encoded = iter(encoder.encode(prompts, responses))
    out = []
    for g in groups:
        comparisons = group_comparisons(g)
        out.append(TokenizedGroup([next(encoded) for _ in g["responses"]], [(w, lo) for w, lo, _ in comparisons],
                                  [p for _, _, p in comparisons], float(g.get("weight", 1.0))))
    return out


def make_batch(groups: Sequence[TokenizedGroup], pad_id: int, device: torch.device) -> dict[str, Any]:
    """Flatten K responses per judgment; comparisons index into the flat list, each with its target,
    and each group with its weight."""
    seqs, winners, losers, group_index, targets = [], [], [], [], []
    for gi, g in enumerate(groups):
        offset = len(seqs)
        seqs.extend(g.responses)
        for (w, l), p in zip(g.comparisons, g.targets):
            winners.append(offset + w)
            losers.append(offset + l)
            group_index.append(gi)
            targets.append(p)
    batch = collate(seqs, pad_id, device)
    batch["winners"] = torch.tensor(winners, dtype=torch.long, device=device)
    batch["losers"] = torch.tensor(losers, dtype=torch.long, device=device)
    batch["group_index"] = torch.tensor(group_index, dtype=torch.long, device=device)
    # None when every target is 1 (rankings only): the loss is then the hard one, bit for bit.
    batch["targets"] = None if all(p == 1.0 for p in targets) else torch.tensor(targets, device=device)
    # None when every weight is 1 (no machine records weighed down): the plain mean of groups, bit for bit.
    batch["weights"] = None if all(g.weight == 1.0 for g in groups) else torch.tensor(
        [g.weight for g in groups], dtype=torch.float32, device=device)
    batch["num_groups"] = len(groups)
    return batch


def batch_order(groups: Sequence[TokenizedGroup], batch_size: int, by_length: bool, rng: random.Random) -> list[list[int]]:
    """Shuffled batches of group indices; with by_length, sort inside windows of 50 batches so
    batches hold similar lengths (less padding) while their order stays random."""
    idx = list(range(len(groups)))
    rng.shuffle(idx)
    if by_length:
        window = batch_size * 50
        idx = [i for s in range(0, len(idx), window)
               for i in sorted(idx[s:s + window], key=lambda i: groups[i].length)]
    batches = [idx[s:s + batch_size] for s in range(0, len(idx), batch_size)]
    rng.shuffle(batches)
    return batches
