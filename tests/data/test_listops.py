"""Tests for ssm.data.listops: printing, parsing, generation, files and batching."""

import json
import random

import numpy as np
import pytest
import torch

from ssm.data import listops, progress
from ssm.data.listops import (
    CHUNK_SIZE,
    EOS_ID,
    OPERATORS,
    PAD_ID,
    SPLITS,
    UNK_ID,
    VOCAB,
    ListOpsDataset,
    collate,
    encode,
    evaluate,
    find_release,
    generate_listops,
    generate_tree,
    prepare_listops,
    read_split,
    render_tree,
    tokenize,
    write_split,
)

SMALL_WINDOW = dict(min_length=20, max_length=200)
MAX_2_9 = ((("[MAX", 2), 9), "]")


def _write_release(directory, rows=(("( ( ( [MAX 2 ) 9 ) ] )", 9),)):
    for split in SPLITS:
        write_split(directory / f"basic_{split}.tsv", rows)


# ---------------------------------------------------------------- trees ---


def test_render_wraps_every_pair_in_parentheses():
    assert render_tree(MAX_2_9) == ("( ( ( [MAX 2 ) 9 ) ] )", 9)
    nested = (((("[MIN", 3), MAX_2_9), 5), "]")
    source, value = render_tree(nested)
    assert source == "( ( ( ( [MIN 3 ) ( ( ( [MAX 2 ) 9 ) ] ) ) 5 ) ] )"
    assert value == 3
    assert render_tree(7) == ("7", 7)


def test_tokenize_drops_parentheses_and_maps_close_to_x():
    assert tokenize("( ( ( [MAX 2 ) 9 ) ] )") == ["[MAX", "2", "9", "X"]
    assert tokenize("  [SM 1\t2 ]\n") == ["[SM", "1", "2", "X"]


def test_generated_tree_token_count_equals_length_and_value_equals_evaluate():
    rng = random.Random(1234)
    lengths = []
    for _ in range(300):
        tree, length = generate_tree(rng, 1, 10, 10)
        source, value = render_tree(tree)
        assert len(tokenize(source)) == length
        assert evaluate(source) == value
        lengths.append(length)
    assert min(lengths) == 1 and max(lengths) > 20


def test_generate_tree_at_max_depth_is_a_leaf():
    rng = random.Random(0)
    for _ in range(100):
        tree, length = generate_tree(rng, 1, 1, 10)
        assert length == 1 and tree in range(10)


def test_operator_nodes_draw_from_two_to_max_args_children_inclusive():
    """num_args ~ randint(2, max_args), both ends included: with max_depth 2 every child is a
    digit, so an operator root's length is 2 + its number of children."""
    rng = random.Random(1)
    counts = set()
    for _ in range(2000):
        _, length = generate_tree(rng, 1, 2, 4)
        if length > 1:
            counts.add(length - 2)
    assert counts == {2, 3, 4}


@pytest.mark.parametrize(
    "source, value",
    [
        ("[MED 4 5 ]", 4),  # int(np.median) truncates 4.5
        ("[MED 1 9 2 ]", 2),
        ("[MED 0 9 8 1 ]", 4),  # (1 + 8) / 2 = 4.5 -> 4
        ("[SM 7 8 9 ]", 4),  # 24 mod 10
        ("[SM 5 5 ]", 0),
        ("[MIN 3 [MAX 2 9 ] 5 ]", 3),
        ("[MAX 1 [SM 9 9 ] ]", 8),
        ("( ( ( [MAX 2 ) 9 ) ] )", 9),
        ("7", 7),
    ],
)
def test_evaluate_hand_computed_values(source, value):
    assert evaluate(source) == value


def test_median_matches_int_of_numpy_median():
    rng = random.Random(5)
    for _ in range(300):
        args = [rng.randrange(10) for _ in range(rng.randint(2, 10))]
        source = "[MED " + " ".join(map(str, args)) + " ]"
        assert evaluate(source) == int(np.median(args))


@pytest.mark.parametrize("source", ["[MAX 1 2", "1 ]", "[FOO 1 ]", "1 2", "[MIN ]", "", "12"])
def test_evaluate_rejects_malformed_expressions(source):
    with pytest.raises(ValueError):
        evaluate(source)


# ----------------------------------------------------------- generation ---


def _all_rows(splits):
    return [row for split in SPLITS for row in splits[split]]


def test_generated_labels_equal_evaluate_and_lengths_inside_strict_window():
    splits = generate_listops(60, 10, 10, seed=3, workers=1, progress=False, **SMALL_WINDOW)
    for source, label in _all_rows(splits):
        assert label == evaluate(source)
        assert 20 < len(tokenize(source)) < 200


def test_official_window_small_sample_lengths_labels_and_format():
    splits = generate_listops(8, 2, 2, seed=0, workers=1, progress=False)
    for source, label in _all_rows(splits):
        assert 500 < len(tokenize(source)) < 2000
        assert label == evaluate(source) and 0 <= label <= 9
        assert source.startswith("( ") and source.endswith(" ] )")
        assert set(source.split()) <= {"(", ")", "]", *OPERATORS, *map(str, range(10))}


def test_split_sizes_match_request_including_empty_splits():
    splits = generate_listops(30, 7, 0, seed=1, workers=1, progress=False, **SMALL_WINDOW)
    assert {name: len(rows) for name, rows in splits.items()} == {"train": 30, "val": 7, "test": 0}
    assert generate_listops(0, 0, 0, progress=False) == {"train": [], "val": [], "test": []}


def test_same_seed_gives_identical_output():
    a = generate_listops(40, 5, 5, seed=11, workers=1, progress=False, **SMALL_WINDOW)
    b = generate_listops(40, 5, 5, seed=11, workers=1, progress=False, **SMALL_WINDOW)
    assert a == b


def test_different_seed_gives_different_output():
    a = generate_listops(40, 5, 5, seed=11, workers=1, progress=False, **SMALL_WINDOW)
    b = generate_listops(40, 5, 5, seed=12, workers=1, progress=False, **SMALL_WINDOW)
    assert _all_rows(a) != _all_rows(b)


def test_worker_count_does_not_change_output():
    n_train = 2 * CHUNK_SIZE  # several chunks, so the process pool is used
    one = generate_listops(n_train, 20, 20, seed=5, workers=1, progress=False, **SMALL_WINDOW)
    two = generate_listops(n_train, 20, 20, seed=5, workers=2, progress=False, **SMALL_WINDOW)
    assert one == two


def test_smaller_request_is_a_prefix_of_the_same_seed_stream():
    big = generate_listops(50, 0, 0, seed=2, workers=1, progress=False, **SMALL_WINDOW)
    small = generate_listops(20, 0, 0, seed=2, workers=1, progress=False, **SMALL_WINDOW)
    assert small["train"] == big["train"][:20]


def test_sources_are_unique_across_all_splits_even_in_a_narrow_window():
    # only 400 trees have length 4 at depth 2 with two arguments: duplicates are drawn
    splits = generate_listops(
        200, 50, 50, seed=0, max_depth=2, max_args=2, min_length=3, max_length=5,
        workers=1, progress=False,
    )
    sources = [source for source, _ in _all_rows(splits)]
    assert len(sources) == 300 == len(set(sources))


def test_window_with_too_few_distinct_trees_raises_runtime_error():
    # depth 2, two arguments, length 4: 4 operators x 100 digit pairs = 400 trees
    with pytest.raises(RuntimeError, match="stalled"):
        generate_listops(
            450, 0, 0, seed=0, max_depth=2, max_args=2, min_length=3, max_length=5,
            workers=1, progress=False,
        )


def test_progress_bar_works_without_a_tty(capsys):
    splits = generate_listops(10, 1, 1, seed=0, workers=1, progress=True, **SMALL_WINDOW)
    assert len(splits["train"]) == 10


def test_plain_stderr_progress_when_rich_and_tqdm_are_missing(monkeypatch, capsys):
    find_spec = progress.importlib.util.find_spec
    monkeypatch.setattr(
        progress.importlib.util, "find_spec",
        lambda name, *a: None if name in ("rich", "tqdm") else find_spec(name, *a),
    )
    generate_listops(10, 0, 0, seed=0, workers=1, progress=True, **SMALL_WINDOW)
    assert "generating ListOps: 10/10" in capsys.readouterr().err


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(n_train=-1), "non-negative"),
        (dict(n_val=1.5), "non-negative"),
        (dict(seed=-3), "seed"),
        (dict(max_depth=0), "max_depth"),
        (dict(max_args=1), "max_args"),
        (dict(min_length=-1), "min_length"),
        (dict(min_length=200, max_length=200), "strictly between"),
        (dict(min_length=300, max_length=200), "strictly between"),
        (dict(min_length=199, max_length=200), "strictly between"),
        (dict(max_depth=2, max_args=3, min_length=5, max_length=100), "at most 5 tokens"),
        (dict(workers=0), "workers"),
    ],
)
def test_bad_generator_arguments_raise_value_error(kwargs, message):
    args = dict(n_train=5, n_val=1, n_test=1, progress=False, **SMALL_WINDOW) | kwargs
    with pytest.raises(ValueError, match=message):
        generate_listops(args.pop("n_train"), args.pop("n_val"), args.pop("n_test"), **args)


# ---------------------------------------------------------------- files ---


def test_write_read_round_trip_with_exact_header(tmp_path):
    rows = [("( ( ( [MAX 2 ) 9 ) ] )", 9), ("( ( ( [MED 4 ) 5 ) ] )", 4)]
    path = tmp_path / "sub" / "basic_train.tsv"
    write_split(path, rows)
    lines = path.read_text(encoding="utf-8").split("\n")
    assert lines[0] == "Source\tTarget"
    assert lines[1] == "( ( ( [MAX 2 ) 9 ) ] )\t9"
    assert read_split(path) == rows
    assert [p.name for p in path.parent.iterdir()] == ["basic_train.tsv"]  # no temp files left


def test_read_split_missing_file_error_names_the_file(tmp_path):
    path = tmp_path / "basic_val.tsv"
    with pytest.raises(FileNotFoundError, match="basic_val.tsv"):
        read_split(path)


@pytest.mark.parametrize("text", ["Input\tOutput\n1\t1\n", "Source\tTarget\n[MAX 1 2 ]\tnine\n",
                                  "Source\tTarget\n[MAX 1 2 ]\n", "Source\tTarget\n[MAX 1 12 ]\t12\n",
                                  "Source\tTarget\n[MIN -1 2 ]\t-1\n"])
def test_read_split_malformed_file_error_names_the_file(tmp_path, text):
    path = tmp_path / "basic_test.tsv"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ValueError, match="basic_test.tsv"):
        read_split(path)


@pytest.mark.parametrize(
    "parts",
    [("listops",), ("listops-1000",), ("lra_release", "listops-1000"),
     ("lra_release", "lra_release", "listops-1000")],
)
def test_find_release_finds_each_official_layout(tmp_path, parts):
    directory = tmp_path.joinpath(*parts)
    _write_release(directory)
    assert find_release(tmp_path) == directory
    assert find_release(str(tmp_path)) == directory


def test_find_release_returns_none_when_absent_or_incomplete(tmp_path):
    assert find_release(tmp_path) is None
    write_split(tmp_path / "listops" / "basic_train.tsv", [("1", 1)])
    write_split(tmp_path / "listops" / "basic_val.tsv", [("1", 1)])
    assert find_release(tmp_path) is None


def test_prepare_listops_uses_release_when_present(tmp_path):
    _write_release(tmp_path / "listops-1000")
    messages = []
    directory = prepare_listops(tmp_path, log=messages.append)
    assert directory == tmp_path / "listops-1000"
    assert "official ListOps release" in messages[0] and str(directory) in messages[0]
    assert not (tmp_path / "listops_generated").exists()


def test_prepare_listops_generates_then_reuses_cache(tmp_path, monkeypatch):
    kwargs = dict(n_train=12, n_val=3, n_test=3, seed=4, workers=1, progress=False, **SMALL_WINDOW)
    messages = []
    directory = prepare_listops(tmp_path, log=messages.append, **kwargs)
    assert directory == tmp_path / "listops_generated" / "seed4_n12-3-3_d10_a10_len20-200"
    assert f"no official ListOps release found under {tmp_path}" in messages[0]
    assert "basic_train.tsv, basic_val.tsv, basic_test.tsv" in messages[0]
    assert "seed 4" in messages[0] and str(directory) in messages[-1]
    expected = generate_listops(12, 3, 3, seed=4, workers=1, progress=False, **SMALL_WINDOW)
    for split in SPLITS:
        assert read_split(directory / f"basic_{split}.tsv") == expected[split]
    params = json.loads((directory / "params.json").read_text())
    assert params["seed"] == 4 and params["n_train"] == 12 and params["min_length"] == 20
    mtime = (directory / "basic_train.tsv").stat().st_mtime_ns

    def fail(*args, **kwargs):
        raise AssertionError("the cached splits should have been reused")

    monkeypatch.setattr(listops, "generate_listops", fail)
    messages.clear()
    assert prepare_listops(tmp_path, log=messages.append, **kwargs) == directory
    assert "reusing" in messages[0]
    assert (directory / "basic_train.tsv").stat().st_mtime_ns == mtime


def test_prepare_listops_ignores_release_when_use_release_is_false(tmp_path):
    _write_release(tmp_path / "listops")
    directory = prepare_listops(
        tmp_path, n_train=4, n_val=1, n_test=1, workers=1, progress=False,
        use_release=False, log=lambda message: None, **SMALL_WINDOW,
    )
    assert directory.parent == tmp_path / "listops_generated"
    assert len(read_split(directory / "basic_train.tsv")) == 4


def test_prepare_listops_rejects_bad_arguments_before_writing(tmp_path):
    with pytest.raises(ValueError, match="max_args"):
        prepare_listops(tmp_path, max_args=1, log=lambda message: None)
    assert list(tmp_path.iterdir()) == []


# --------------------------------------------------- encoding & batching ---


def test_vocab_is_fixed_with_special_ids_first():
    assert len(VOCAB) == 18 and len(set(VOCAB)) == 18
    assert VOCAB[PAD_ID] == "<pad>" and VOCAB[UNK_ID] == "<unk>" and VOCAB[EOS_ID] == "<eos>"
    assert set(OPERATORS) | {"X"} | set(map(str, range(10))) <= set(VOCAB)


def test_encode_maps_tokens_appends_eos_and_marks_unknown():
    ids = encode("( ( ( [MAX 2 ) 9 ) ] ) [FOO")
    expected = [VOCAB.index(t) for t in ("[MAX", "2", "9", "X")] + [UNK_ID, EOS_ID]
    assert ids.dtype == torch.long and ids.tolist() == expected
    assert encode("[SM 1 2 ]", append_eos=False).tolist() == [VOCAB.index(t) for t in
                                                               ("[SM", "1", "2", "X")]


def test_encode_truncation_keeps_eos_last():
    source = "[SM 1 2 3 4 ]"
    assert encode(source, l_max=4).tolist() == [VOCAB.index("[SM"), VOCAB.index("1"),
                                                VOCAB.index("2"), EOS_ID]
    assert encode(source, l_max=1).tolist() == [EOS_ID]
    assert encode(source, l_max=3, append_eos=False).tolist() == encode(source)[:3].tolist()
    assert len(encode(source, l_max=100)) == 7
    with pytest.raises(ValueError, match="l_max"):
        encode(source, l_max=0)


def test_dataset_from_path_and_rows_with_limit(tmp_path):
    rows = [("( ( ( [MAX 2 ) 9 ) ] )", 9), ("( ( ( ( [SM 1 ) 2 ) 3 ) ] )", 6), ("5", 5)]
    path = tmp_path / "basic_train.tsv"
    write_split(path, rows)
    from_path = ListOpsDataset(path, l_max=4)
    from_rows = ListOpsDataset(rows, l_max=4, limit=2)
    assert len(from_path) == 3 and len(from_rows) == 2
    tokens, label = from_path[1]
    assert label == 6 and tokens.tolist() == encode(rows[1][0], l_max=4).tolist()
    assert torch.equal(from_rows[0][0], from_path[0][0])
    with pytest.raises(ValueError, match="limit"):
        ListOpsDataset(rows, limit=-1)


def test_dataset_counts_the_rows_cut_to_l_max():
    rows = [("( ( ( [MAX 2 ) 9 ) ] )", 9), ("( ( ( ( [SM 1 ) 2 ) 3 ) ] )", 6), ("5", 5)]  # 5, 6, 2 tokens
    for l_max, cut in [(None, 0), (6, 0), (5, 1), (2, 2), (1, 3)]:
        dataset = ListOpsDataset(rows, l_max=l_max)
        assert dataset.truncated == cut
        assert [tokens.tolist() for tokens, _ in dataset] == [encode(s, l_max).tolist() for s, _ in rows]


def test_collate_right_pads_with_pad_id_and_returns_lengths():
    dataset = ListOpsDataset([("( ( ( [MAX 2 ) 9 ) ] )", 9), ("5", 5)])
    loader = torch.utils.data.DataLoader(dataset, batch_size=2, collate_fn=collate)
    tokens, labels, lengths = next(iter(loader))
    assert tokens.shape == (2, 5) and tokens.dtype == torch.long
    assert labels.tolist() == [9, 5] and lengths.tolist() == [5, 2]
    assert tokens[1].tolist() == [VOCAB.index("5"), EOS_ID, PAD_ID, PAD_ID, PAD_ID]
    with pytest.raises(ValueError, match="empty"):
        collate([])
