"""Tree rounds: sdfp-hf's own decoding loop, which verifies a tree of candidates in one target forward.

transformers' assisted decoding verifies one chain per round. `tree_generate` is a decoding loop passed to
`generate` as its `custom_generate` (the public route for a loop of one's own: `generate` prepares the
generation config, logits processors, stopping criteria, inputs and cache, then calls it in place of its
own loop). Each round:

1. the candidate sources (`sources.py`) propose a tree below the last verified token: earlier occurrences
   of the context's last tokens, the suffix memory of earlier outputs, the recycled-token table, and, when
   the planner predicts it pays, the draft's chain with its runners-up;
2. the planner keeps the nodes most likely to be accepted, as many as pay for their verification on the
   measured cost curve (`sdfp_hf.costs.CostCurve`), or none (a plain decoding step);
3. one forward of the target over all nodes with 4-D tree masks (`tree.attention_masks`);
4. the walk: from the root, the target's own token at each node (greedy: the argmax of the processed
   logits; sampling: one draw from the processed distribution), descending while a child carries it. The
   candidates are a function of the context, so the output is the target's, token for token when greedy,
   and of the target's distribution when sampling;
5. the cache keeps exactly the prefix and the accepted path (`sdfp_hf.cache.commit_tree`); the table, the
   calibration and the cost curve learn from the round.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import astuple
from typing import Any

import torch

from .._compat import cache_kwargs, cache_of, eos_token_ids
from ..cache import commit_tree, prepare_tree_cache
from ..costs import CostCurve, clock, expected_tokens, throughput
from .calls import current_call
from .sources import Calibration, NgramIndex, RecycledTable, calibration_keys, draft_proposals, estimate_agreements
from .tree import CandidateTree, attention_masks

__all__ = ["TreePlanner", "tree_generate", "tree_planner_of"]

SEED_POSITIONS = 64  # prompt positions whose logits seed the recycled-token table at prefill
PROBE_DEPTH = 3  # draft tokens a probe round verifies
CHAIN = "draft-chain"  # the calibration key of the draft chain's per-token acceptance


class TreePlanner:
    """What a draft's tree rounds learn and keep between `generate` calls.

    The verification cost curve, the draft step's time and its per-token acceptance, the calibration of
    every source's candidates, the recycled-token table and the suffix memory of earlier outputs.
    """

    def __init__(self, vocab_size: int, options: Any, max_draft: int):
        self.options, self.max_draft = options, max_draft
        self.curve = CostCurve()
        self.overhead: float | None = None  # seconds of a round outside the target's forward and the draft
        self.draft_seconds: float | None = None  # one draft step
        self.calibration = Calibration()
        self.vocab_size = vocab_size
        self.forget()
        self.rounds = 0
        self.rounds_since_draft = 0

    def forget(self) -> None:
        """Drop what earlier outputs taught: the suffix memory and the recycled-token table."""
        options = self.options
        self.table = RecycledTable(self.vocab_size, options.recycled_tokens) if options.recycled_tokens else None
        self.memory = (
            NgramIndex(max_ngram=8, min_ngram=2, max_tokens=options.suffix_memory, name="memory")
            if options.suffix_memory
            else None
        )

    @property
    def draft_rate(self) -> float:
        """The draft chain's measured per-token acceptance (a weak prior of 0.5 before any)."""
        return self.calibration.chance(CHAIN, prior=0.5)

    def draft_expected(self, depth: int) -> float:
        """Tokens a chain of `depth` draft tokens yields on its own, the target's own included."""
        return expected_tokens(self.draft_rate, depth)

    def draft_probe_due(self) -> bool:
        """Whether this round must try the draft: too little measured of it, or not tried for a while."""
        return self.calibration.weight.get(CHAIN, 0.0) < 6 or self.rounds_since_draft >= self.options.probe_every

    def cost(self, nodes: int, draft_steps: int = 0) -> float | None:
        verify = self.curve(nodes)
        if verify is None:
            return None
        return verify + (self.overhead or 0.0) + draft_steps * (self.draft_seconds or 0.0)

    def size(self, reach: list[float], draft_steps: int) -> tuple[int, float]:
        """How many of the best nodes (`reach`, best first) to verify, and the predicted tokens per second."""
        best, best_rate, expected = 0, throughput(1.0, 0, 0.0, self.cost(1) or 1.0), 1.0
        for k, r in enumerate(reach[: self.options.tree_nodes], start=1):
            expected += r
            cost = self.cost(k + 1, draft_steps)
            rate = throughput(expected, 0, 0.0, cost) if cost else 0.0
            if rate > best_rate:
                best, best_rate = k, rate
        return best, best_rate

    def draft_rate_at(self, depth: int) -> float:
        """Predicted tokens per second of a round of `depth` draft tokens alone (0 before any measurement)."""
        cost = self.cost(depth + 1, depth)
        return self.draft_expected(depth) / cost if cost else 0.0

    def draft_depth(self) -> int:
        """The draft chain's length with the best predicted rate on its own (0: do not run the draft)."""
        if self.max_draft <= 0:
            return 0
        if self.draft_seconds is None:
            return self.max_draft  # never measured: run it, to measure
        best, best_rate = 0, 0.0
        for d in range(1, self.max_draft + 1):
            rate = self.draft_rate_at(d)
            if rate > best_rate:
                best, best_rate = d, rate
        return best


def tree_planner_of(draft: Any, vocab_size: int) -> TreePlanner:
    """The draft's tree planner, kept on the draft between `generate` calls (remade when its options change;
    a call that runs while another holds it gets one of its own: `sdfp_hf.drafting.calls`)."""
    options = draft.drafting
    max_draft = options.tree_draft_tokens if options.tree_draft else 0
    settings = (astuple(options), max_draft, vocab_size, draft.dtype, draft.device)
    return current_call(draft).state("tree", settings, lambda: TreePlanner(vocab_size, options, max_draft))


def _choose(scores: torch.Tensor, do_sample: bool) -> int:
    if do_sample:
        return int(torch.multinomial(scores.softmax(-1), 1))
    return int(scores.argmax(-1))


@torch.no_grad()
def tree_generate(
    model: Any,
    input_ids: torch.LongTensor,
    logits_processor: Any,
    stopping_criteria: Any,
    generation_config: Any,
    synced_gpus: bool = False,
    sdfp_draft: Any = None,
    sdfp_streamer: Any = None,
    **model_kwargs: Any,
) -> torch.LongTensor:
    """The decoding loop of tree rounds (`generate(..., custom_generate=tree_generate, sdfp_draft=draft)`).

    Args:
        model (`PreTrainedModel`): the target.
        input_ids (`torch.LongTensor` of shape `(1, prompt_length)`): the prompt.
        logits_processor, stopping_criteria, generation_config: as `generate` prepared them.
        sdfp_draft (`SelfDraft`): the draft whose planner, sources and statistics the rounds use.
        sdfp_streamer (`BaseStreamer`, *optional*): the user's streamer (`generate` keeps `streamer` to itself).
        **model_kwargs: `generate`'s model kwargs; the target's cache is among them.

    Returns:
        `torch.LongTensor` of shape `(1, length)`: the prompt and the generated tokens.
    """
    draft, streamer = sdfp_draft, sdfp_streamer
    cache = cache_of(model_kwargs)
    do_sample = bool(generation_config.do_sample)
    eos = set() if eos_token_ids(generation_config) is None else set(eos_token_ids(generation_config).tolist())
    max_length = int(generation_config.max_length)
    layer_types = getattr(model.config.get_text_config(), "layer_types", None)
    dtype, device = model.get_input_embeddings().weight.dtype, input_ids.device
    stats = current_call(draft).stats
    options = draft.drafting
    vocab_size = model.get_output_embeddings().weight.shape[0]
    planner = tree_planner_of(draft, vocab_size)
    index = NgramIndex(max_ngram=options.prompt_lookup or 1, min_ngram=options.lookup_min_ngram, name="lookup")
    if streamer is not None:
        streamer.put(input_ids.cpu())

    # prefill: the prompt in one forward; its last positions' logits seed the recycled-token table
    keep = min(input_ids.shape[1], SEED_POSITIONS)
    logits = model(input_ids=input_ids, use_cache=True, logits_to_keep=keep, **cache_kwargs(model, cache)).logits[0].float()
    prepare_tree_cache(cache)
    prompt = input_ids[0].tolist()
    index.extend(prompt)
    if planner.table is not None:
        planner.table.update(prompt[-keep:], logits)
    token = _choose(logits_processor(input_ids, logits[-1:])[0], do_sample)
    ids = torch.cat([input_ids, torch.tensor([[token]], device=device)], dim=1)
    sequence = prompt + [token]
    index.extend([token])
    if streamer is not None:
        streamer.put(torch.tensor([token]))
    finished = bool(stopping_criteria(ids, None).all())

    while not finished:
        started = clock(device)
        room = max_length - len(sequence)
        tree = CandidateTree.rooted_at(sequence[-1])
        if room > 1:
            _free_proposals(tree, sequence, index, planner, options)
        free_size, free_rate = planner.size(tree.sorted_reach(), 0)
        measured = planner.curve(1) is not None  # else this round is a plain step, which measures T(1)
        depth = min(planner.draft_depth(), room - 1) if room > 1 and measured else 0
        probe = depth > 0 and planner.draft_probe_due()
        chain: list[int] = []
        draft_time = 0.0
        if depth and (probe or _draft_pays(planner, tree, depth, free_rate)):
            t = clock(device)
            if probe:
                chain = draft_proposals(draft, tree, cache, len(sequence), min(depth, PROBE_DEPTH), planner.calibration)
            else:
                rate, longest = max(free_rate, planner.draft_rate_at(depth)), min(planner.max_draft, room - 1)
                chain = draft_proposals(
                    draft, tree, cache, len(sequence), longest, planner.calibration,
                    keep_going=_next_step_pays(planner, tree, free_size, rate, longest),
                )
            draft_time = clock(device) - t
            planner.rounds_since_draft = 0
            if chain and options.prompt_lookup:  # the context's continuations of the chain's end, free
                end = chain[-1]
                suffix = sequence + tree.path(end)
                index.propose(tree, suffix[-index.max_ngram :], planner.calibration, length=options.lookup_tokens,
                              parent=end)
        else:
            planner.rounds_since_draft += 1
        draft_steps = len(chain)
        if chain:
            estimate_agreements(tree, planner.calibration)
        # the draft's steps are paid for by now: the cut weighs only what verifying more nodes costs
        size, _ = planner.size(tree.sorted_reach(), 0) if measured else (0, 0.0)
        # a probe verifies the draft's chain whatever the cut, to measure its acceptance
        tree, _ = tree.best(size, max_depth=room - 1, keep=chain if probe else ())

        t = clock(device)
        masks = attention_masks(tree, cache, layer_types, dtype, device)
        positions = torch.tensor([[len(sequence) - 1 + d for d in tree.depths]], device=device)
        out = model(
            input_ids=torch.tensor([tree.tokens], device=device), position_ids=positions, attention_mask=masks,
            use_cache=True, logits_to_keep=0, **cache_kwargs(model, cache),
        )
        logits = out.logits[0].float()
        verify_time = clock(device) - t  # the walk reads these logits next: no stall added

        path, new_tokens = _walk(tree, logits, ids, logits_processor, do_sample, eos, room)
        commit_tree(cache, len(tree), [0, *path])
        _learn(planner, tree, logits, path, do_sample)
        if planner.table is not None:
            planner.table.update(tree.tokens, logits, last=[0, *path])
        stop = len(new_tokens)
        for i in range(1, len(new_tokens) + 1):  # stop strings and the like may end a round early
            candidate = torch.cat([ids, torch.tensor([new_tokens[:i]], device=device)], dim=1)
            if bool(stopping_criteria(candidate, None).all()):
                stop, finished = i, True
                break
        new_tokens = new_tokens[:stop]
        ids = torch.cat([ids, torch.tensor([new_tokens], device=device)], dim=1)
        sequence += new_tokens
        index.extend(new_tokens)
        if streamer is not None:
            streamer.put(torch.tensor(new_tokens))
        if len(tree) > 1:
            accepted = len(path)
            counts: dict[str, list[int]] = {}
            for node in range(1, len(tree)):
                for key in tree.sources[node]:
                    name = key.split(":")[0]
                    counts.setdefault(name, [0, 0])[0] += 1
                    counts[name][1] += node in path
            stats.record(len(tree) - 1, accepted, _main_source(counts), per_source=counts)

        planner.curve.record(len(tree), verify_time)
        if draft_steps:
            step = draft_time / draft_steps
            planner.draft_seconds = step if planner.draft_seconds is None else 0.9 * planner.draft_seconds + 0.1 * step
        rest = clock(device) - started - verify_time - draft_time
        planner.overhead = rest if planner.overhead is None else 0.9 * planner.overhead + 0.1 * rest
        planner.rounds += 1

    if planner.memory is not None:
        planner.memory.extend(sequence[len(prompt) :] + [-1])  # -1 separates outputs: no n-gram spans two
    if streamer is not None:
        streamer.end()
    return ids


def _free_proposals(tree: CandidateTree, sequence: list[int], index: NgramIndex, planner: TreePlanner, options: Any) -> None:
    """The sources that cost no forward: lookup in the context, the suffix memory, the recycled table."""
    calibration = planner.calibration
    if options.prompt_lookup:
        index.propose(tree, sequence[-index.max_ngram :], calibration, length=options.lookup_tokens, exclude_end=True)
    if planner.memory is not None and len(planner.memory):
        planner.memory.propose(tree, sequence[-planner.memory.max_ngram :], calibration, length=options.lookup_tokens)
    if planner.table is not None:
        planner.table.propose(tree, calibration, max_nodes=options.tree_nodes)
    estimate_agreements(tree, calibration)


def _next_step_pays(
    planner: TreePlanner, tree: CandidateTree, free_size: int, rate: float, depth: int
) -> Callable[[int, float], bool]:
    """The draft chain's stop: after a draft step to `node`, whose chain has reached `reach`, the chain goes on
    when some number `j` of further steps (up to `depth` in all) is expected to yield at least what their
    seconds would yield at the round's `rate`.

    Each next token is taken to be as likely as the last one (`c`, the last node's calibrated chance: the
    draft's confidence runs in streaks), and where it misses, a runner-up is accepted with the runners-up's
    measured mean chance `s`: step `i` yields ``reach * c**(i - 1) * (c + (1 - c) * s)``, only where the tree
    does not hold its token already (times the chance left over by the children of the tree's likeliest path
    below `node`: a lookup the chain merged with goes on along the same tokens). Their seconds: `j` draft steps
    and the verification of `j` more nodes on the measured cost curve, from the width the round verifies so
    far. Looking several steps ahead matters where verification cost is a step, not a slope: in fp32 on a CPU
    a second verified token can cost as much as the first and the next six nearly nothing (one step ahead,
    the chain stopped after its first token in every round of
    `benchmarks/results/epyc-zen4/readings_2026-12-07_stop.txt`).
    """
    calibration = planner.calibration
    keys = [key for key in calibration.weight if key.startswith("draft-sibling:")]
    runner_up = (sum(calibration.hits[k] for k in keys) + 0.2) / (sum(calibration.weight[k] for k in keys) + 2.0)
    step_seconds = planner.draft_seconds or 0.0
    last = [1.0]  # the chain's reach one step back

    def keep_going(node: int, reach: float) -> bool:
        c, last[0] = reach / last[0], reach
        done = tree.depths[node]
        width = free_size + 1 + done  # the chain's nodes so far join the free ones
        verified = planner.curve(width) or 0.0
        gain, chance, below = 0.0, reach, node
        for j in range(1, depth - done + 1):
            children = tree.children[below] if below is not None else {}
            held = min(sum(tree.chance[child] for child in children.values()), 1.0)
            gain += chance * (c + (1.0 - c) * runner_up) * (1.0 - held)
            chance *= c
            below = max(children.values(), key=lambda child: tree.chance[child]) if children else None
            more = max((planner.curve(width + j) or verified) - verified, 0.0)
            if gain >= rate * (j * step_seconds + more):
                return True
        return False

    return keep_going


def _draft_pays(planner: TreePlanner, tree: CandidateTree, depth: int, free_rate: float) -> bool:
    """Whether drafting `depth` tokens is predicted to beat the free sources alone this round.

    Where the context offers no first token (no lookup or memory match: the recycled table's guesses alone),
    the draft runs whenever it is predicted to beat plain decoding. The free tree's estimate is least sure
    there (SmolLM2-135M bf16: 0.44 tokens a round predicted, 0.37 accepted), and drafting in every such round
    made tree rounds faster on SmolLM2-135M bf16 (30 x 128 interleaved: 1.89x against 1.81x; level on
    Qwen2.5-Coder-1.5B, 18 prompts: 1.82x both;
    `benchmarks/results/amx-machine/readings_2026-12-07_draft_without_lookup.txt`).

    Elsewhere the draft's chain reaches depth `j` with the measured per-token acceptance `a` as `a^j`, but it
    adds tokens only where the free nodes would not already have reached that depth (when a lookup is right, the
    draft mostly proposes the same tokens): its gain at depth `j` is `a^j` times the chance that no free node
    at depth `j` is accepted. The tree of the free nodes and those gains, cut at its best size with the
    draft's steps paid for, against the best tree of the free nodes alone.
    """
    if not any(_from_context(tree.sources[child]) for child in tree.children[0].values()):
        plain = planner.cost(1)
        return plain is not None and planner.draft_rate_at(depth) > 1.0 / plain
    rate = planner.draft_rate
    reach = tree.reach()
    covered = [0.0] * (depth + 1)
    for node in range(1, len(tree)):
        if tree.depths[node] <= depth:
            covered[tree.depths[node]] += reach[node]
    gains = [rate ** j * (1.0 - min(covered[j], 1.0)) for j in range(1, depth + 1)]
    merged = sorted([*reach[1:], *gains], reverse=True)
    return planner.size(merged, depth)[1] > free_rate


def _from_context(keys: set[str]) -> bool:
    """Whether a node came from the context's lookup or the suffix memory (`NgramIndex` sources)."""
    return any(key.startswith(("lookup:", "memory:")) for key in keys)


def _walk(tree, logits, ids, logits_processor, do_sample, eos, room) -> tuple[list[int], list[int]]:
    """The target's own tokens down the tree: the accepted nodes, and every new token (the last the target's)."""
    node, path, tokens = 0, [], []
    prefix = ids
    while True:
        scores = logits_processor(prefix, logits[node : node + 1])[0]
        token = _choose(scores, do_sample)
        tokens.append(token)
        child = tree.children[node].get(token)
        if token in eos or len(tokens) >= room or child is None:
            return path, tokens
        path.append(child)
        node = child
        prefix = torch.cat([prefix, torch.tensor([[token]], device=prefix.device)], dim=1)


def _learn(planner: TreePlanner, tree: CandidateTree, logits: torch.Tensor, path: list[int], do_sample: bool) -> None:
    """Calibrate every source from every node whose parent was accepted: did the target take this token there?

    Only those: a calibrated chance is a node's acceptance given its parent's, and below a rejected node the
    target reads a context it never produced, where a lookup's or the table's continuation of that context
    agrees with it more often than it would have on the real one. A node that several sources proposed is
    learned under their agreement's key (`calibration_keys`).
    """
    accepted = {0, *path}
    nodes = [node for node in range(1, len(tree)) if tree.parents[node] in accepted]
    if not nodes:
        return
    parents = torch.tensor([tree.parents[node] for node in nodes], device=logits.device)
    tokens = torch.tensor([tree.tokens[node] for node in nodes], device=logits.device)
    if do_sample:
        hits = logits.softmax(-1)[parents, tokens].tolist()  # one transfer for the whole tree
    else:
        hits = (logits.argmax(-1)[parents] == tokens).float().tolist()
    for node, hit in zip(nodes, hits):
        for key in calibration_keys(tree.sources[node]):
            planner.calibration.record(key, hit)
        if any(key.startswith("draft:") for key in tree.sources[node]):
            planner.calibration.record(CHAIN, hit)  # the draft chain's per-token acceptance


def _main_source(counts: dict[str, list[int]]) -> str:
    """The round's source: the one with most accepted nodes, else most proposed."""
    return max(counts, key=lambda name: (counts[name][1], counts[name][0]))
