from __future__ import annotations

import gzip
import hashlib

import numpy as np
import pytest

from ec4srec.data.io import DataError, RawSequences, read_sequences

GOOD = "1 5 3 7\n2 1 2 3 4\n\n3 9 8 6\n"


@pytest.mark.parametrize("name", ["seq.txt", "seq.txt.gz"])
def test_parse_plain_and_gz(tmp_path, name):
    path = tmp_path / name
    data = GOOD.encode()
    path.write_bytes(gzip.compress(data) if name.endswith(".gz") else data)
    raw = read_sequences(path)
    # Users come in file order with their ids; the blank line is skipped.
    assert raw.user_ids.tolist() == [1, 2, 3]
    seqs = [raw.items[raw.offsets[u]:raw.offsets[u + 1]].tolist() for u in range(3)]
    # Items are kept in file order per user, addressed by offsets.
    assert seqs == [[5, 3, 7], [1, 2, 3, 4], [9, 8, 6]]
    # num_items is the largest item id; the digest is of the uncompressed text.
    assert raw.num_items == 9
    assert raw.sha256 == hashlib.sha256(data).hexdigest()
    assert raw.skipped_short == 0


def test_blank_and_whitespace_lines_skipped(tmp_path):
    path = tmp_path / "s.txt"
    path.write_text("\n   \n1 1 2 3\n\t\n2 3 2 1\n\n")
    raw = read_sequences(path)
    # Blank or whitespace-only lines are not users.
    assert raw.user_ids.tolist() == [1, 2]


@pytest.mark.parametrize("lines, lineno, fragment", [
    (["1 1 2 3", "2 1 x 3"], 2, "'x' is not an integer"),
    (["1 1 2 3", "2 1 2.5 3"], 2, "'2.5' is not an integer"),
    (["1 1 2 3", "u 1 2 3"], 2, "'u' is not an integer"),
    (["1 1 2 3", "2 1 0 3"], 2, "id 0 is not positive"),
    (["1 1 -4 3"], 1, "id -4 is not positive"),
    (["0 1 2 3"], 1, "id 0 is not positive"),
    (["1 1 2 3", "", "2 4 5 4"], 3, "item 4 appears twice"),
    (["1 1 2 3", "2 1 2 3", "1 4 5 6"], 3, "user 1 already appeared on line 1"),
])
def test_bad_input_names_file_and_line(tmp_path, lines, lineno, fragment):
    path = tmp_path / "bad.txt"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError) as err:
        read_sequences(path)
    # Every bad-input class raises DataError naming file:line and the offending token.
    assert f"{path}:{lineno}:" in str(err.value)
    assert fragment in str(err.value)


def test_bad_line_in_gz_names_file_and_line(tmp_path):
    path = tmp_path / "bad.txt.gz"
    path.write_bytes(gzip.compress(b"1 1 2 3\n2 1 1 3\n"))
    # Compressed files report the same file:line location.
    with pytest.raises(DataError, match=r"bad\.txt\.gz:2:"):
        read_sequences(path)


def test_short_users_skipped_and_counted(tmp_path):
    path = tmp_path / "s.txt"
    path.write_text("1 1 2\n2 1 2 3\n3 4\n4\n5 5 6 7 8\n")
    raw = read_sequences(path)
    # Users with < 3 items (including none) are dropped and counted; 3 items is enough.
    assert raw.user_ids.tolist() == [2, 5]
    assert raw.skipped_short == 3


def test_short_users_error_mode(tmp_path):
    path = tmp_path / "s.txt"
    path.write_text("1 1 2 3\n2 1 2\n")
    # With short_users="error" a short user is a DataError at its line.
    with pytest.raises(DataError, match=rf"{path}:2: user 2 has 2 item"):
        read_sequences(path, short_users="error")


def test_only_short_users_is_error(tmp_path):
    path = tmp_path / "s.txt"
    path.write_text("1 1 2\n2 3\n")
    # A file with no usable user is an error, not an empty dataset.
    with pytest.raises(DataError, match="no usable user"):
        read_sequences(path)


def test_missing_file(tmp_path):
    # A missing file is a DataError naming it.
    with pytest.raises(DataError, match="file not found"):
        read_sequences(tmp_path / "nope.txt")


def test_corrupt_gz_is_data_error(tmp_path):
    path = tmp_path / "x.txt.gz"
    path.write_bytes(b"not gzip at all")
    # A corrupt gzip file is reported as DataError, not an OSError traceback.
    with pytest.raises(DataError, match="cannot read"):
        read_sequences(path)


def test_non_utf8_is_data_error(tmp_path):
    path = tmp_path / "x.txt"
    path.write_bytes(b"1 1 2 3\n2 \xff\xfe 3\n")
    # Undecodable bytes are a DataError naming the file.
    with pytest.raises(DataError, match="not UTF-8"):
        read_sequences(path)


def test_from_lists_layout():
    raw = RawSequences.from_lists([[3, 1, 2], [4, 5, 6, 7]], user_ids=[10, 20])
    # Offsets delimit each user's items in the flat array; lengths follow.
    assert raw.offsets.tolist() == [0, 3, 7]
    assert raw.lengths.tolist() == [3, 4]
    assert raw.items.dtype == np.int64 and raw.num_items == 7
    assert raw.user_ids.tolist() == [10, 20]
