"""A converted file's sha256 is remembered: converting it again does not hash it again, and a changed file
(even with the same size) is hashed again, so the recorded sha256 is always the file's."""

from __future__ import annotations

import hashlib
import os
import threading
import time
from pathlib import Path

import pytest

from abswin_convert import convert
from abswin_convert.demo import example_path
from abswin_convert.io import hash_cache, provenance, safetensors_writer
from abswin_convert.io.outputs import read_output


def _source(tmp_path: Path) -> Path:
    source = tmp_path / "model.safetensors"
    source.write_bytes((example_path() / "model.safetensors").read_bytes())
    return source


def _recorded(output: Path) -> str:
    return read_output(output).provenance.entries()["source_sha256"]


def test_a_second_conversion_takes_the_sha256_from_the_cache(tmp_path, monkeypatch):
    source = _source(tmp_path)
    convert(source, tmp_path / "a.safetensors", 128, family="hiera")
    expected = hashlib.sha256(source.read_bytes()).hexdigest()
    assert _recorded(tmp_path / "a.safetensors") == expected

    def no_hashing(*args: object) -> object:
        raise AssertionError("hashed again")

    monkeypatch.setattr(provenance.hashlib, "file_digest", no_hashing)
    convert(source, tmp_path / "b.safetensors", 256, family="hiera")
    assert _recorded(tmp_path / "b.safetensors") == expected


def test_a_file_changed_in_place_is_hashed_again(tmp_path):
    source = _source(tmp_path)
    convert(source, tmp_path / "a.safetensors", 128, family="hiera")
    data = bytearray(source.read_bytes())
    data[-4:] = bytes(4 - i for i in range(4))  # same size, one weight changed
    stat = source.stat()
    source.write_bytes(data)
    os.utime(source, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # even with its old modification time
    convert(source, tmp_path / "b.safetensors", 128, family="hiera")
    assert _recorded(tmp_path / "b.safetensors") == hashlib.sha256(data).hexdigest()


@pytest.mark.parametrize("content", ["not json", "[1, 2]", '{"x": 3}'])
def test_a_damaged_or_disabled_cache_only_costs_a_hash(tmp_path, monkeypatch, content):
    cache = tmp_path / "cache.json"
    cache.write_text(content)
    monkeypatch.setenv(hash_cache.ENV_VAR, str(cache))
    source = _source(tmp_path)
    assert provenance.sha256_of(source) == hashlib.sha256(source.read_bytes()).hexdigest()
    assert hash_cache.cached_sha256(source) == provenance.sha256_of(source)  # and the cache is whole again
    monkeypatch.setenv(hash_cache.ENV_VAR, "off")
    assert hash_cache.cached_sha256(source) is None


def test_a_hash_still_running_when_the_write_starts_is_patched_into_the_header(tmp_path, monkeypatch):
    # the first conversion of a large file: the header goes out with a placeholder, the hash is written in at the end
    source = _source(tmp_path)
    hash_now, patch_now = provenance.sha256_of, safetensors_writer._patch_header
    patched = []

    def hash_once_the_output_is_being_written(path: Path) -> str:
        deadline = time.monotonic() + 60
        while not list(tmp_path.glob(".abswin-tmp-*/.abswin-tmp-*")) and time.monotonic() < deadline:
            time.sleep(0.005)  # the staged file exists: the header was built while this hash was still running
        return hash_now(path)

    def patch(*args: object) -> None:
        patched.append(args[2])
        patch_now(*args)

    monkeypatch.setattr(provenance, "sha256_of", hash_once_the_output_is_being_written)
    monkeypatch.setattr(safetensors_writer, "_patch_header", patch)
    monkeypatch.setenv(hash_cache.ENV_VAR, str(tmp_path / "cache.json"))
    first = tmp_path / "out" / "first.safetensors"  # staged in tmp_path, beside its folder
    convert(source, first, 128, family="hiera")
    assert patched == [provenance.SOURCE_SHA256]
    assert provenance.SourceDigest.PLACEHOLDER.encode() not in first.read_bytes()
    assert _recorded(first) == hashlib.sha256(source.read_bytes()).hexdigest()

    monkeypatch.setattr(provenance, "sha256_of", hash_now)  # from the cache now: known before the write, as a rule
    convert(source, tmp_path / "out" / "again.safetensors", 128, family="hiera")
    assert (tmp_path / "out" / "again.safetensors").read_bytes() == first.read_bytes()  # either way, the same file


def test_threads_remembering_at_once_keep_every_entry(tmp_path, monkeypatch):
    # a zoo hashes two new sources at once: neither thread's rewrite of the cache may drop the other's entry
    monkeypatch.setenv(hash_cache.ENV_VAR, str(tmp_path / "cache.json"))
    files = [tmp_path / f"{i}.bin" for i in range(40)]
    for i, file in enumerate(files):
        file.write_bytes(bytes([i]) * 100)

    def remember(part: list[Path]) -> None:
        for file in part:
            hash_cache.remember_sha256(file, hashlib.sha256(file.read_bytes()).hexdigest(), file.stat())

    threads = [threading.Thread(target=remember, args=(files[i::4],)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert [hash_cache.cached_sha256(f) for f in files] == [hashlib.sha256(f.read_bytes()).hexdigest() for f in files]
