"""Text sources: files read incrementally with clear errors, synthetic lengths, lazy sources."""

from __future__ import annotations

import numpy as np
import pytest

from tinyqwen import sources
from tinyqwen.sources import (
    EOT,
    DocumentsSource,
    FileSource,
    SyntheticSource,
    TinyStoriesSource,
    iter_text_file,
    open_source,
    read_text_file,
    scan_text_file,
    synthetic_stories,
)


def test_an_empty_file_is_refused_clearly(tmp_path):
    empty = tmp_path / "empty.txt"
    empty.write_bytes(b"")
    with pytest.raises(ValueError, match=r"empty\.txt.*is empty \(0 bytes\)"):
        read_text_file(empty)
    blank = tmp_path / "blank.txt"
    blank.write_text("\n  \n\t\n")
    with pytest.raises(ValueError, match=r"blank\.txt.*only whitespace"):
        read_text_file(blank)
    with pytest.raises(ValueError, match="only whitespace"):
        sources.load_stories(str(blank), 5, verbose=False)


def test_a_latin1_file_names_the_file_and_the_byte_offset(tmp_path):
    latin = tmp_path / "latin1.txt"
    latin.write_bytes("Once upon a time.\n\nThe café was open.".encode("latin-1"))
    offset = len(b"Once upon a time.\n\nThe caf")
    with pytest.raises(
        ValueError, match=rf"latin1\.txt is not UTF-8 text: the byte 0xe9 at byte offset {offset} "
    ):
        read_text_file(latin)
    with pytest.raises(ValueError, match="iconv -f latin1"):
        FileSource(latin).identity()


def test_a_bad_byte_deep_in_a_large_file_is_located_across_chunks(tmp_path, monkeypatch):
    monkeypatch.setattr(sources, "_CHUNK", 7)  # many chunks, characters cut between them
    good = "Ünïcödé 🙂 story one.\n\nStory two, 数字.\n\n"
    f = tmp_path / "mixed.txt"
    f.write_bytes(good.encode() * 3 + b"tail \xff\xfe end")
    with pytest.raises(ValueError, match=rf"0xff at byte offset {3 * len(good.encode()) + 5:,} "):
        list(iter_text_file(f))
    truncated = tmp_path / "truncated.txt"
    truncated.write_bytes(good.encode() + "é".encode()[:1])  # a character cut off at the end
    with pytest.raises(ValueError, match=rf"byte offset {len(good.encode())} "):
        read_text_file(truncated)


def test_a_binary_file_is_refused(tmp_path):
    f = tmp_path / "model.bin"
    f.write_bytes(b"PK\x03\x04" + bytes(range(256)))
    with pytest.raises(ValueError, match=r"model\.bin looks binary.*NUL byte at byte offset 4"):
        read_text_file(f)


def test_files_are_read_incrementally_with_either_separator(tmp_path, monkeypatch):
    monkeypatch.setattr(sources, "_CHUNK", 5)
    stories = ["Ünïcödé story 🙂 one.", "Two\nhas two lines.", "Three, 数字."]
    by_eot = tmp_path / "eot.txt"
    by_eot.write_text(f"\n{EOT}\n".join(stories) + f"\n{EOT}\n")
    by_blank = tmp_path / "blank.txt"
    by_blank.write_text("\r\n \r\n".join(s.replace("\n", " ") for s in stories) + "\n\n\n")
    assert read_text_file(by_eot) == stories
    assert read_text_file(by_blank) == [s.replace("\n", " ") for s in stories]
    assert read_text_file(by_eot, n_docs=2) == stories[:2]
    scan = scan_text_file(by_eot)
    assert (
        scan["separator"] == EOT
        and scan["size"] == by_eot.stat().st_size
        and len(scan["sha256"]) == 64
    )


def test_a_file_source_identity_follows_the_content(tmp_path):
    f = tmp_path / "stories.txt"
    f.write_text("One story.\n\nAnother story.\n")
    src = FileSource(f, n_docs=10)
    first = src.identity()
    assert (
        first["kind"] == "file"
        and first["path"] == str(f.resolve())
        and first["size"] == f.stat().st_size
    )
    assert list(src) == ["One story.", "Another story."]
    f.write_text("One story.\n\nA changed story.\n")
    assert FileSource(f).identity()["sha256"] != first["sha256"]
    with pytest.raises(ValueError, match="not a file"):
        FileSource(tmp_path / "missing.txt")


def test_a_single_str_is_not_a_list_of_documents():
    with pytest.raises(ValueError, match="single str of 11 characters"):
        DocumentsSource("Once upon a")
    with pytest.raises(ValueError, match="not a file"):  # a str source is a name or a path
        open_source("Once upon a time there was a story", verbose=False)


def test_synthetic_lengths_follow_tinystories():
    short = synthetic_stories(3_000, seed=1)
    long = synthetic_stories(3_000, seed=1, lengths="tinystories")
    mean_short, mean_long = np.mean([len(s) for s in short]), np.mean([len(s) for s in long])
    assert abs(mean_long - sources.TINYSTORIES_MEAN_CHARS) < 0.05 * sources.TINYSTORIES_MEAN_CHARS
    assert 1.3 < mean_long / mean_short < 1.8  # TinyStories' stories are about 1.5x the short ones
    q05, q95 = np.quantile([len(s) for s in long], [0.05, 0.95])
    assert q95 / q05 > 2.5, "lengths spread like a log-normal, not one fixed length"
    assert long == synthetic_stories(3_000, seed=1, lengths="tinystories")
    with pytest.raises(ValueError, match="lengths"):
        synthetic_stories(3, lengths="long")


def test_sources_are_lazy_and_identify_themselves(capsys):
    src = open_source("synthetic:tinystories", 5, seed=3)
    assert isinstance(src, SyntheticSource) and "synthetic" in capsys.readouterr().out
    assert list(src) == synthetic_stories(5, seed=3, lengths="tinystories")
    assert src.identity() == {
        "kind": "synthetic",
        "generator": sources.SYNTHETIC_VERSION,
        "seed": 3,
        "split": "train",
        "lengths": "tinystories",
    }
    val = open_source("synthetic", 5, split="validation", verbose=False)
    assert not set(val) & set(open_source("synthetic", 5, verbose=False))
    docs = DocumentsSource(["a story", "another"])
    assert docs.identity() != DocumentsSource(["a story", "other"]).identity()


def test_tinystories_source_reads_a_dataset_in_batches_and_records_provenance():
    datasets = pytest.importorskip("datasets")
    ds = datasets.Dataset.from_dict({"text": ["  One.  ", "", "Two.", "Three.", "Four."]})
    src = TinyStoriesSource(3, dataset=ds)
    assert list(src) == ["One.", "Two.", "Three."]  # stripped, empty rows skipped, n_docs kept
    assert src.identity() == {
        "kind": "tinystories",
        "dataset": sources.TINYSTORIES,
        "split": "train",
    }
    assert src.provenance()["fingerprint"] == ds._fingerprint and src.provenance()["num_rows"] == 5
    assert TinyStoriesSource(10).streaming and not TinyStoriesSource(2_200_000).streaming
