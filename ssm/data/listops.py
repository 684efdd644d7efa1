"""Long Range Arena ListOps: generation, TSV files, tokenization and a torch dataset.

A sample is a nested expression over digits 0-9 with operators ``[MIN``,
``[MAX``, ``[MED`` and ``[SM`` (sum mod 10), each closed by ``]``; its target
is the value, a digit.  In memory a tree is a leaf ``int`` or nested pairs
``(((op, v0), v1), ..., "]")``; printed, every pair is parenthesised: a MAX of
2 and 9 prints as ``( ( ( [MAX 2 ) 9 ) ] )``.  A tree's length counts operator,
digit and ``]`` tokens, not parentheses.

Generation follows the official LRA generator's algorithm but is deterministic
by seed whatever the number of worker processes: chunk ``i`` of trees is drawn
from an RNG seeded by ``(seed, i)``; chunks are merged in order and
deduplicated in first-seen order.  Files follow the official release format
``basic_{train,val,test}.tsv``: header ``Source\\tTarget``, then one printed
tree and its value per line.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import itertools
import json
import math
import os
import pathlib
import random
import tempfile
from collections.abc import Callable, Iterable, Sequence

import numpy as np
import torch

from ssm.data.progress import progress_bar

OPERATORS = ("[MIN", "[MAX", "[MED", "[SM")
END = "]"
SPECIAL_TOKENS = ("<pad>", "<unk>", "<eos>")
VOCAB: tuple[str, ...] = (
    SPECIAL_TOKENS + tuple(str(d) for d in range(10)) + ("[MAX", "[MED", "[MIN", "[SM", "X")
)
PAD_ID, UNK_ID, EOS_ID = 0, 1, 2
SPLITS = ("train", "val", "test")
HEADER = "Source\tTarget"
RELEASE_SUBDIRS = (
    ("listops",),
    ("listops-1000",),
    ("lra_release", "listops-1000"),
    ("lra_release", "lra_release", "listops-1000"),
)
OPERATOR_PROBABILITY = 0.25  # below max_depth a node is a leaf when U[0,1) > this
CHUNK_SIZE = 256  # accepted trees per chunk; part of what a seed determines
MAX_DRAWS_PER_TREE = 1000  # a chunk gives up after CHUNK_SIZE * this many draws

_TOKEN_IDS = {token: i for i, token in enumerate(VOCAB)}


# ---------------------------------------------------------------- trees ---


def generate_tree(rng: random.Random, depth: int, max_depth: int, max_args: int) -> tuple:
    """Draw a random tree; returns ``(tree, length)``.

    The root has ``depth`` 1.  Below ``max_depth`` a node is an operator with
    probability 0.25, with 2..``max_args`` (inclusive) children one level
    deeper; otherwise, and always at ``max_depth``, it is a uniform digit.
    """
    if depth < max_depth and rng.random() <= OPERATOR_PROBABILITY:
        tree, length = OPERATORS[int(rng.random() * 4)], 2
        for _ in range(2 + int(rng.random() * (max_args - 1))):
            child, child_length = generate_tree(rng, depth + 1, max_depth, max_args)
            tree, length = (tree, child), length + child_length
        return (tree, END), length
    return int(rng.random() * 10), 1


def apply_operator(op: str, args: Sequence[int]) -> int:
    """Value of operator token ``op`` (e.g. ``"[MED"``) over the digits ``args``."""
    if not args:
        raise ValueError(f"operator {op} has no arguments")
    if op == "[MIN":
        return min(args)
    if op == "[MAX":
        return max(args)
    if op == "[SM":
        return sum(args) % 10
    if op == "[MED":  # int(np.median(args)): the mean of the middle two is truncated
        ordered, middle = sorted(args), len(args) // 2
        return ordered[middle] if len(args) % 2 else (ordered[middle - 1] + ordered[middle]) // 2
    raise ValueError(f"unknown ListOps operator {op!r}")


def render_tree(tree) -> tuple[str, int]:
    """Printed form and value ``(source, label)`` of a tree in nested-pair form.

    The source is space-separated tokens with every pair in parentheses.
    """
    tokens: list[str] = []

    def emit(node) -> int:
        if not isinstance(node, tuple):
            tokens.append(str(node))
            return node
        body, children = node[0], []
        while isinstance(body, tuple):  # unwind (((op, v0), v1), ..., v_last)
            body, child = body
            children.append(child)
        tokens.extend(["("] * (len(children) + 1) + [body])
        values = []
        for child in reversed(children):
            values.append(emit(child))
            tokens.append(")")
        tokens.extend((END, ")"))
        return apply_operator(body, values)

    value = emit(tree)
    return " ".join(tokens), value


# ------------------------------------------------------------ strings ---


def tokenize(source: str) -> list[str]:
    """Tokens of a printed tree: parentheses dropped, ``]`` mapped to ``X``."""
    return ["X" if t == END else t for t in source.split() if t not in ("(", ")")]


def encode(source: str, l_max: int | None = None, append_eos: bool = True) -> torch.LongTensor:
    """Token ids of ``source``, a LongTensor of shape ``(length,)``.

    Unknown tokens become ``UNK_ID``; ``append_eos`` ends the ids with
    ``EOS_ID``; ``l_max`` caps the total length, keeping the EOS last.
    """
    if l_max is not None and l_max < 1:
        raise ValueError(f"l_max must be >= 1 or None, got {l_max}")
    ids = [_TOKEN_IDS.get(token, UNK_ID) for token in tokenize(source)]
    if l_max is not None:
        ids = ids[: l_max - 1 if append_eos else l_max]
    return torch.tensor(ids + [EOS_ID] if append_eos else ids, dtype=torch.long)


def evaluate(source: str) -> int:
    """Value of a printed expression, parsed from its tokens."""
    stack: list[tuple[str, list[int]]] = []
    values: list[int] = []  # the finished top-level expression(s)
    for token in tokenize(source):
        if token in OPERATORS:
            stack.append((token, []))
            continue
        if token == "X":
            if not stack:
                raise ValueError(f"']' without an open operator in {source[:80]!r}")
            value = apply_operator(*stack.pop())
        elif len(token) == 1 and token.isdigit():
            value = int(token)
        else:
            raise ValueError(f"unknown ListOps token {token!r}")
        (stack[-1][1] if stack else values).append(value)
    if stack or len(values) != 1:
        raise ValueError(f"not a single complete ListOps expression: {source[:80]!r}")
    return values[0]


# --------------------------------------------------------- generation ---


def validate_generator_args(
    sizes: Sequence[int], seed: int, max_depth: int, max_args: int,
    min_length: int, max_length: int, workers: int | None,
) -> None:
    """Raise ValueError unless the generator arguments describe a feasible run."""
    longest = 1  # the longest tree: every node an operator with max_args children
    for _ in range(max(max_depth - 1, 0)):
        longest = 2 + max_args * longest
    checks = [
        (all(isinstance(n, int) and n >= 0 for n in sizes),
         f"n_train, n_val, n_test must be non-negative ints, got {tuple(sizes)}"),
        (isinstance(seed, int) and seed >= 0, f"seed must be a non-negative int, got {seed!r}"),
        (max_depth >= 1, f"max_depth must be >= 1, got {max_depth}"),
        (max_args >= 2, f"max_args must be >= 2, got {max_args}"),
        (min_length >= 0, f"min_length must be >= 0, got {min_length}"),
        (min_length + 1 < max_length,
         f"no length fits strictly between min_length={min_length} and max_length={max_length}"),
        (longest > min_length,
         f"trees with max_depth={max_depth}, max_args={max_args} have at most {longest} "
         f"tokens, not more than min_length={min_length}"),
        (workers is None or workers >= 1, f"workers must be >= 1 or None, got {workers}"),
    ]
    for ok, message in checks:
        if not ok:
            raise ValueError(message)


def chunk_rng(seed: int, chunk_index: int) -> random.Random:
    """Independent RNG for chunk ``chunk_index`` of a run with ``seed``."""
    state = np.random.SeedSequence([seed, chunk_index]).generate_state(4, dtype=np.uint32)
    return random.Random(int.from_bytes(state.tobytes(), "little"))


def generate_chunk(job: tuple[int, int, int, int, int, int]) -> list[tuple[str, int]]:
    """Rows ``(source, label)`` of one chunk.

    ``job`` is ``(seed, chunk_index, max_depth, max_args, min_length,
    max_length)``.  Draws trees until ``CHUNK_SIZE`` have a length strictly
    inside the window, or ``CHUNK_SIZE * MAX_DRAWS_PER_TREE`` were drawn.
    """
    seed, chunk_index, max_depth, max_args, min_length, max_length = job
    rng = chunk_rng(seed, chunk_index)
    rows: list[tuple[str, int]] = []
    for _ in range(CHUNK_SIZE * MAX_DRAWS_PER_TREE):
        tree, length = generate_tree(rng, 1, max_depth, max_args)
        if min_length < length < max_length:
            rows.append(render_tree(tree))
            if len(rows) == CHUNK_SIZE:
                break
    return rows


def generate_listops(
    n_train: int, n_val: int, n_test: int, *, seed: int = 0, max_depth: int = 10,
    max_args: int = 10, min_length: int = 500, max_length: int = 2000,
    workers: int | None = None, progress: bool = True,
) -> dict[str, list[tuple[str, int]]]:
    """Generate unique rows ``(source, label)`` split into train, val and test.

    Returns ``{"train": rows, "val": rows, "test": rows}``; every source has a
    length strictly inside ``(min_length, max_length)``.  ``workers`` (None:
    all CPU cores) and ``progress`` do not change the output.
    """
    sizes = (n_train, n_val, n_test)
    validate_generator_args(sizes, seed, max_depth, max_args, min_length, max_length, workers)
    total, workers = sum(sizes), workers or os.cpu_count() or 1
    unique: dict[str, int] = {}
    next_chunk = 0
    with progress_bar(total, progress and total > 0, "generating ListOps") as advance, contextlib.ExitStack() as stack:
        pool = None
        if workers > 1 and total > CHUNK_SIZE:
            pool = stack.enter_context(concurrent.futures.ProcessPoolExecutor(workers))
        while len(unique) < total:
            found_before, round_size = len(unique), math.ceil((total - len(unique)) / CHUNK_SIZE)
            jobs = [(seed, chunk, max_depth, max_args, min_length, max_length)
                    for chunk in range(next_chunk, next_chunk + round_size)]
            next_chunk += round_size
            for rows in (pool.map if pool is not None else map)(generate_chunk, jobs):
                before = len(unique)
                for source, label in rows:
                    unique.setdefault(source, label)
                advance(min(len(unique), total) - before)
            if len(unique) == found_before:
                raise RuntimeError(
                    f"ListOps generation stalled at {len(unique)} of {total} unique trees: "
                    f"lengths in ({min_length}, {max_length}) with max_depth={max_depth}, "
                    f"max_args={max_args} admit too few distinct trees"
                )
    rows = list(unique.items())[:total]  # the first `total` unique rows, in chunk order
    bounds = (0, *itertools.accumulate(sizes))
    return {name: rows[bounds[i] : bounds[i + 1]] for i, name in enumerate(SPLITS)}


# -------------------------------------------------------------- files ---


def split_filename(split: str) -> str:
    """Official file name of ``split``: ``basic_{split}.tsv``."""
    return f"basic_{split}.tsv"


def _write_atomic(path: pathlib.Path, chunks: Iterable[str]) -> None:
    """Write text ``chunks`` to ``path`` through a temp file in its folder and os.replace."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, tmp_name = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(handle, "w", encoding="utf-8", newline="\n") as f:
            f.writelines(chunks)
        os.replace(tmp_name, path)
    except BaseException:
        os.unlink(tmp_name)
        raise


def write_split(path: str | os.PathLike, rows: Iterable[tuple[str, int]]) -> None:
    """Write rows ``(source, label)`` as an official TSV, atomically."""
    lines = (f"{source}\t{int(label)}\n" for source, label in rows)
    _write_atomic(pathlib.Path(path), itertools.chain([HEADER + "\n"], lines))


def read_split(path: str | os.PathLike) -> list[tuple[str, int]]:
    """Rows ``(source, label)`` of an official TSV.

    A missing file raises FileNotFoundError, a malformed one ValueError; both
    messages name the file.
    """
    path = pathlib.Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"ListOps split file not found: {path}")
    rows = []
    with path.open(encoding="utf-8", newline="") as f:
        header = f.readline().rstrip("\r\n")
        if header != HEADER:
            raise ValueError(f"{path}: expected the header 'Source\\tTarget', got {header[:80]!r}")
        for line_number, line in enumerate(f, start=2):
            line = line.rstrip("\r\n")
            if not line:
                continue
            source, _, target = line.partition("\t")
            try:
                label = int(target)
            except ValueError:
                label = None
            if label not in range(10):
                raise ValueError(
                    f"{path}:{line_number}: expected '<source>\\t<label 0-9>', got {line[:80]!r}"
                )
            rows.append((source, label))
    return rows


def _has_all_splits(directory: pathlib.Path) -> bool:
    """Whether ``directory`` holds all of ``basic_{train,val,test}.tsv``."""
    return all((directory / split_filename(split)).is_file() for split in SPLITS)


def find_release(data_root: str | os.PathLike) -> pathlib.Path | None:
    """First directory of the official release layout under ``data_root``, else None.

    Tries ``RELEASE_SUBDIRS`` in order (``listops``, ``listops-1000``,
    ``lra_release/listops-1000``, ``lra_release/lra_release/listops-1000``)
    for one holding all three ``basic_*.tsv`` files.
    """
    candidates = (pathlib.Path(data_root).joinpath(*parts) for parts in RELEASE_SUBDIRS)
    return next((c for c in candidates if _has_all_splits(c)), None)


def prepare_listops(
    data_root: str | os.PathLike, *, n_train: int = 96000, n_val: int = 2000,
    n_test: int = 2000, seed: int = 0, max_depth: int = 10, max_args: int = 10,
    min_length: int = 500, max_length: int = 2000, workers: int | None = None,
    progress: bool = True, use_release: bool = True, log: Callable[[str], object] = print,
) -> pathlib.Path:
    """Directory holding ``basic_{train,val,test}.tsv``, generated if needed.

    With ``use_release`` an official release found by ``find_release`` wins.
    Otherwise the splits are generated, or reused from an earlier run, in
    ``data_root/listops_generated/seed{seed}_n{..}_d{..}_a{..}_len{..}`` next to
    a ``params.json`` recording the parameters.
    """
    params = dict(seed=seed, n_train=n_train, n_val=n_val, n_test=n_test, max_depth=max_depth,
                  max_args=max_args, min_length=min_length, max_length=max_length)
    sizes = (n_train, n_val, n_test)
    validate_generator_args(sizes, seed, max_depth, max_args, min_length, max_length, workers)
    root = pathlib.Path(data_root)
    release = find_release(root) if use_release else None
    if release is not None:
        log(f"using the official ListOps release in {release}")
        return release
    out_dir = root / "listops_generated" / (
        f"seed{seed}_n{n_train}-{n_val}-{n_test}_d{max_depth}_a{max_args}"
        f"_len{min_length}-{max_length}"
    )
    if _has_all_splits(out_dir):
        log(f"reusing generated ListOps splits in {out_dir}")
        return out_dir
    expected = ", ".join(split_filename(split) for split in SPLITS)
    reason = (
        f"no official ListOps release found under {root} "
        f"(expected {expected} in {root / 'listops'})"
        if use_release
        else "not looking for an official ListOps release (use_release=False)"
    )
    log(f"{reason}; generating {n_train}/{n_val}/{n_test} train/val/test trees "
        f"with the official generator's algorithm, seed {seed}")
    splits = generate_listops(*sizes, seed=seed, max_depth=max_depth, max_args=max_args,
                              min_length=min_length, max_length=max_length, workers=workers,
                              progress=progress)
    params_text = json.dumps({**params, "chunk_size": CHUNK_SIZE}, indent=2) + "\n"
    _write_atomic(out_dir / "params.json", [params_text])
    for split in SPLITS:
        write_split(out_dir / split_filename(split), splits[split])
    log(f"wrote generated ListOps splits ({expected}) to {out_dir}")
    return out_dir


# ------------------------------------------------------------ dataset ---


class ListOpsDataset(torch.utils.data.Dataset):
    """Encoded ListOps rows; item ``i`` is ``(tokens LongTensor (length,), label int)``.

    ``path_or_rows`` is a TSV path or a list of rows ``(source, label)``;
    ``limit`` keeps the first ``limit`` rows.  Rows are encoded here, once; ``truncated``
    counts the rows longer than ``l_max`` (cut to it, EOS kept last).
    """

    def __init__(self, path_or_rows: str | os.PathLike | Sequence[tuple[str, int]],
                 l_max: int | None = 2048, append_eos: bool = True, limit: int | None = None):
        if limit is not None and limit < 0:
            raise ValueError(f"limit must be >= 0 or None, got {limit}")
        is_path = isinstance(path_or_rows, (str, os.PathLike))
        rows = read_split(path_or_rows) if is_path else list(path_or_rows)
        rows = rows[:limit]
        full = [encode(source, None, append_eos) for source, _ in rows]
        self.truncated = 0 if l_max is None else sum(len(tokens) > l_max for tokens in full)
        self.tokens = full if not self.truncated else [encode(source, l_max, append_eos) for source, _ in rows]
        self.labels = [int(label) for _, label in rows]

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[torch.LongTensor, int]:
        return self.tokens[index], self.labels[index]


def collate(batch: Sequence[tuple[torch.LongTensor, int]]) -> tuple[torch.LongTensor, ...]:
    """Batch dataset items: ``(tokens, labels, lengths)``.

    tokens ``(B, L)`` right-padded with PAD_ID to the longest item's length
    ``L``; labels ``(B,)``; lengths ``(B,)`` before padding.
    """
    if not batch:
        raise ValueError("cannot collate an empty batch")
    sequences = [tokens for tokens, _ in batch]
    tokens = torch.nn.utils.rnn.pad_sequence(sequences, batch_first=True, padding_value=PAD_ID)
    labels = torch.tensor([int(label) for _, label in batch], dtype=torch.long)
    lengths = torch.tensor([len(s) for s in sequences], dtype=torch.long)
    return tokens, labels, lengths
