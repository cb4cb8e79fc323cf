"""Coverage-guided fuzzing of the wire codec with atheris (libFuzzer): every input goes through
parse_query, parse_response, parse_header and error_reply (only WireError may come out), and,
when it parses as a cacheable response, through make_cacheable and render_reply with the
oracle of tests/fuzz/wirecheck.py (the reply parses, says the same, TTLs aged).

Not a pytest file (pytest collects test_*.py only). Needs ``pip install -e '.[fuzz]'``.

    python tests/fuzz/fuzz_wire.py --seeds DIR        # write the seed corpus into DIR, exit
    python tests/fuzz/fuzz_wire.py -runs=1000000 -rss_limit_mb=1024 DIR

Any other libFuzzer flag works (-max_total_time=, -jobs=, -artifact_prefix=). A crash leaves
the input in crash-<sha1> (or under -artifact_prefix): replay it with
``python tests/fuzz/fuzz_wire.py crash-<sha1>``.
"""

from __future__ import annotations

import hashlib
import sys
import zlib
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import atheris

with atheris.instrument_imports(include=["mifdns"]):
    from mifdns.core import render, wire  # noqa: F401  (instrumented before anything imports it)

from tests.fuzz.wirecheck import check_patch_path, corpus, parse_all


def one_input(data: bytes) -> None:
    parse_all(data)
    h = zlib.crc32(data)  # the render's parameters, from the input so a crash replays
    check_patch_path(data, h, (0, 1, 299, 1 << 31)[h >> 30], bool(h & 2))


def write_seeds(where: str) -> None:
    out = Path(where)
    out.mkdir(parents=True, exist_ok=True)
    for data in corpus():
        (out / hashlib.sha1(data).hexdigest()).write_bytes(data)


def main(argv: list[str]) -> int:
    if len(argv) == 3 and argv[1] == "--seeds":
        write_seeds(argv[2])
        return 0
    atheris.Setup(argv, one_input)
    atheris.Fuzz()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
