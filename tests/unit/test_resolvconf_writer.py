"""The managed resolv.conf: formatting, libc limits, atomic rewrites, backup and restore
(regular file, symlink, no file, and after a crash). Files only, in a temporary directory."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from mifdns.aio.resolvconf_writer import (
    HEADER,
    ResolvConfWriter,
    nameserver_lines,
    render,
    search_domains,
)

LISTEN = [("127.0.0.53", 53)]


# -- formatting -------------------------------------------------------------------------------
def test_render_points_at_mifdns_with_the_search_list_and_options() -> None:
    text = render(LISTEN, ["corp.example", "home.example"])
    lines = text.splitlines()
    assert lines[0] == HEADER
    assert "nameserver 127.0.0.53" in lines
    assert "search corp.example home.example" in lines
    assert lines[-1] == "options edns0 trust-ad"
    assert text.endswith("\n")


def test_nameservers_as_resolv_conf_wants_them() -> None:
    lines, notes = nameserver_lines(
        [
            ("127.0.0.53", 53),
            ("::1", 53),
            ("0.0.0.0", 53),
            ("::", 53),
            ("2001:db8:0:0::53", 53),
            ("127.0.0.2", 5353),
        ]
    )
    # no brackets, no port; wildcards as loopback; at most 3 (MAXNS); duplicates once
    assert lines == ["nameserver 127.0.0.53", "nameserver ::1", "nameserver 127.0.0.1"]
    assert any("2001:db8::53" in n and "at most 3" in n for n in notes)
    assert any("127.0.0.2 port 5353" in n for n in notes)


def test_no_search_line_without_search_domains() -> None:
    assert not any(line.startswith("search") for line in render(LISTEN, []).splitlines())


def test_search_list_is_deduplicated_and_cut_at_six_domains() -> None:
    doms = ["A.example.", "a.example", "b.example"] + [f"d{i}.example" for i in range(6)]
    kept, dropped = search_domains(doms)
    assert kept == [
        "a.example",
        "b.example",
        "d0.example",
        "d1.example",
        "d2.example",
        "d3.example",
    ]
    assert dropped == ["d4.example", "d5.example"]
    text = render(LISTEN, doms)
    assert (
        "# search domains left out (libc limits: 6 domains, 256 characters): "
        "d4.example d5.example" in text
    )


def test_search_list_is_cut_at_256_characters() -> None:
    long = [("x" * 60 + f".n{i}.example") for i in range(5)]  # 71 chars each
    kept, dropped = search_domains(long)
    assert len(kept) == 3 and sum(len(d) + 1 for d in kept) <= 256
    assert dropped == long[3:]


# -- the file ---------------------------------------------------------------------------------
def test_regular_file_is_replaced_atomically_and_comes_back_as_it_was(tmp_path: Path) -> None:
    path = tmp_path / "resolv.conf"
    path.write_text("nameserver 192.0.2.1\n")
    path.chmod(0o640)
    inode = path.stat().st_ino
    w = ResolvConfWriter(str(path), LISTEN)
    w.take_over()
    assert w.update(["corp.example"])
    assert not w.update(["corp.example"])  # unchanged text: not rewritten
    assert path.read_text() == render(LISTEN, ["corp.example"])
    assert stat.S_IMODE(path.stat().st_mode) == 0o644 and path.stat().st_ino != inode
    assert w.update([])
    assert "search" not in path.read_text()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["resolv.conf", "resolv.conf.mifdns-orig"]
    w.restore()
    assert path.read_text() == "nameserver 192.0.2.1\n"
    assert path.stat().st_ino == inode  # the very same file: owner, mode, label
    assert stat.S_IMODE(path.stat().st_mode) == 0o640
    assert sorted(p.name for p in tmp_path.iterdir()) == ["resolv.conf"]
    w.restore()  # idempotent


def test_symlink_original_comes_back_as_the_same_symlink(tmp_path: Path) -> None:
    (tmp_path / "stub-resolv.conf").write_text("nameserver 127.0.0.53\n")
    path = tmp_path / "resolv.conf"
    path.symlink_to("stub-resolv.conf")
    w = ResolvConfWriter(str(path), LISTEN)
    w.take_over()
    w.update(["a.example"])
    assert not path.is_symlink()
    assert (tmp_path / "stub-resolv.conf").read_text() == "nameserver 127.0.0.53\n"  # untouched
    w.restore()
    assert path.is_symlink() and os.readlink(path) == "stub-resolv.conf"


def test_missing_original_is_removed_again(tmp_path: Path) -> None:
    path = tmp_path / "resolv.conf"
    w = ResolvConfWriter(str(path), LISTEN)
    w.take_over()
    w.update([])
    assert path.exists()
    w.restore()
    assert not path.exists() and list(tmp_path.iterdir()) == []


def test_after_a_crash_the_backup_on_disk_stays_the_original(tmp_path: Path) -> None:
    path = tmp_path / "resolv.conf"
    path.write_text("nameserver 192.0.2.1\n")
    first = ResolvConfWriter(str(path), LISTEN)
    first.take_over()
    first.update(["a.example"])  # ... and the process is killed: no restore
    second = ResolvConfWriter(str(path), LISTEN)
    second.take_over()  # finds our file: must not save it as "the original"
    second.update(["b.example"])
    second.restore()
    assert path.read_text() == "nameserver 192.0.2.1\n"


def test_after_a_crash_with_no_original_the_file_is_removed(tmp_path: Path) -> None:
    path = tmp_path / "resolv.conf"
    crashed = ResolvConfWriter(str(path), LISTEN)
    crashed.take_over()
    crashed.update([])  # ... killed: no restore
    again = ResolvConfWriter(str(path), LISTEN)
    again.take_over()
    again.restore()
    assert not path.exists()


def test_someone_elses_rewrite_is_logged_and_overwritten(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "resolv.conf"
    path.write_text("nameserver 192.0.2.1\n")
    w = ResolvConfWriter(str(path), LISTEN)
    w.take_over()
    w.update([])
    path.write_text("nameserver 198.51.100.1\n")  # a DHCP client without a hook
    w.update(["x.example"])
    assert "changed by something else" in caplog.text
    w.restore()
    assert path.read_text() == "nameserver 192.0.2.1\n"


def test_write_errors_are_logged_not_raised(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "d" / "resolv.conf"
    path.parent.mkdir()
    w = ResolvConfWriter(str(path), LISTEN)
    w.take_over()
    path.parent.rmdir()  # the directory is gone: nothing can be written
    assert w.update(["a.example"]) is False
    assert w.errors == 1 and "cannot write" in caplog.text


def test_take_over_fails_loudly_when_nothing_can_be_saved(tmp_path: Path) -> None:
    w = ResolvConfWriter(str(tmp_path / "missing-dir" / "resolv.conf"), LISTEN)
    w.take_over()  # a missing file in a missing directory: nothing to save
    assert w.original_absent
    path = tmp_path / "ro" / "resolv.conf"
    path.parent.mkdir()
    path.write_text("x\n")
    w2 = ResolvConfWriter(str(path), LISTEN)
    w2.backup = str(tmp_path / "no-such-dir" / "backup")  # cannot be created
    with pytest.raises(OSError):
        w2.take_over()
    assert path.read_text() == "x\n"
