"""The results store cannot be fooled: identities and checksums, quarantine, one writer per
folder, leftover temporary files, I/O errors that name their path, `guidelab verify`."""

import errno
import hashlib
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

import guidelab.noise as noise_module
from guidelab.cli import app
from guidelab.studies import expand_units, load_spec, run_spec
from guidelab.studies.results import StoreIOError
from guidelab.studies.store import FolderBusyError, ResultStore, unit_identity

SMALL = ["trials=60"]
CLI = [sys.executable, "-c", "from guidelab.cli import app; app()"]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONDONTWRITEBYTECODE": "1"}
TIMEOUT = 300  # seconds a subprocess may take before the test fails (not a timing assert)


def cli(*args) -> list[str]:
    return CLI + [str(a) for a in args]


def invoke(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


@pytest.fixture(scope="module")
def fresh(tmp_path_factory) -> Path:
    """An uninterrupted run of the smoke study (6 units), never modified by a test."""
    out = tmp_path_factory.mktemp("fresh") / "run"
    run_spec(load_spec("smoke", SMALL), out, progress=False, log=lambda _: None)
    return out


@pytest.fixture
def work(fresh, tmp_path) -> Path:
    """A copy of the fresh run that a test may damage."""
    out = tmp_path / "work"
    shutil.copytree(fresh, out)
    return out


def reference_rows(fresh):
    return ResultStore(fresh).read_rows([u.id for u in expand_units(load_spec("smoke", SMALL))])


def unit_files(out: Path) -> list[str]:
    return sorted(p.name for p in (out / "units").glob("*.parquet"))


def rerun(out: Path, **options):
    lines: list[str] = []
    result = run_spec(load_spec("smoke", SMALL), out, progress=False, log=lines.append,
                      **options)
    return result, lines


# ----------------------------------------------------------------------------- identity

def test_the_identity_covers_what_determines_the_rows(monkeypatch):
    spec = load_spec("smoke", SMALL)
    unit = expand_units(spec)[2]
    base = unit_identity(spec, unit).digest
    assert re.fullmatch(r"[0-9a-f]{64}", base)
    for same in (["name='other'"], ["description='words'"], ["keep_samples=7"]):
        assert unit_identity(load_spec("smoke", SMALL + same), unit).digest == base, same
    for other in (["trials=61"], ["seed=1"], ["dtype='float64'"], ["sampler.steps=21"]):
        assert unit_identity(load_spec("smoke", SMALL + other), unit).digest != base, other
    assert unit_identity(spec, expand_units(spec)[3]).digest != base  # another key
    assert unit_identity(spec, unit, chunk_rows=16).digest != base
    printed = unit_identity(spec, unit, fingerprints={"model": "abc"}).digest
    assert printed != base
    assert unit_identity(spec, unit, fingerprints=lambda u: {"model": "abc"}).digest == printed
    with pytest.raises(ValueError, match="^fingerprints: "):
        unit_identity(spec, unit, fingerprints={"model": 3})
    monkeypatch.setattr(noise_module, "NOISE_SCHEME_VERSION", 2)
    assert unit_identity(spec, unit).digest != base


def test_a_file_carries_its_identity_and_a_checksum_of_all_its_bytes(fresh):
    spec = load_spec("smoke", SMALL)
    for unit in expand_units(spec):
        path = fresh / "units" / f"{unit.id}.parquet"
        meta = pq.read_metadata(path).metadata
        assert meta[b"guidelab.identity"].decode() == unit_identity(spec, unit).digest
        assert meta[b"guidelab.unit_id"].decode() == unit.id
        assert b'"trials":60' in meta[b"guidelab.spec"]
        digest = meta[b"guidelab.checksum"]
        data = path.read_bytes()
        assert data.count(digest) == 1
        zeroed = data.replace(digest, b"0" * 64)
        assert hashlib.sha256(zeroed).hexdigest().encode() == digest
        samples = pq.read_metadata(fresh / "samples" / f"{unit.id}.parquet").metadata
        assert meta[b"guidelab.samples"] == samples[b"guidelab.checksum"]


# ----------------------------------------------------------------------------- damaged files

def test_no_bit_flip_in_a_unit_file_is_read_back_as_another_value(fresh, work):
    """Seeded bit flips anywhere in random unit files (plus the first and last byte, the
    footer, the checksum's digits and the identity): every flipped file is either rejected
    (quarantined, its unit recomputed) or reads back identical; in fact every one is rejected,
    since the checksum covers every byte; the rerun's rows equal the uninterrupted run's."""
    reference = reference_rows(fresh)
    names = unit_files(fresh)
    pristine = {name: (fresh / "units" / name).read_bytes() for name in names}
    rng = random.Random(20240611)
    rounds = []
    for _ in range(5):  # 5 x 6 = 30 random flips
        rounds.append([(name, rng.randrange(len(pristine[name])), rng.randrange(8))
                       for name in rng.sample(names, len(names))])
    directed = []
    for name, spot in zip(names, ("first", "last", "footer", "checksum", "identity", "page"),
                          strict=True):
        data = pristine[name]
        footer = len(data) - 8 - int.from_bytes(data[-8:-4], "little")
        meta = pq.read_metadata(fresh / "units" / name).metadata
        offset = {"first": 0, "last": len(data) - 1, "footer": footer,
                  "checksum": data.index(meta[b"guidelab.checksum"]) + 17,
                  "identity": data.index(meta[b"guidelab.identity"]) + 5, "page": 4}[spot]
        directed.append((name, offset, rng.randrange(8)))
    rounds.append(directed)
    flips = rejected = 0
    for batch in rounds:
        for name, offset, bit in batch:
            data = bytearray(pristine[name])
            data[offset] ^= 1 << bit
            (work / "units" / name).write_bytes(bytes(data))
        result, lines = rerun(work)
        for name, offset, bit in batch:
            unit_id = name[:-len(".parquet")]
            flips += 1
            if unit_id in result.computed:
                rejected += 1
                assert sum(f"units/{name}:" in line for line in lines) == 1, lines
            else:  # accepted: then it must read back exactly what was written
                assert [r for r in result.rows if r["unit_id"] == unit_id] == \
                    [r for r in reference if r["unit_id"] == unit_id], (name, offset, bit)
        assert len(lines) == len(batch)  # one line per rejected file, nothing else
        assert result.rows == reference  # bit for bit, records included
        for name in names:  # the recomputed files are the very same bytes
            assert (work / "units" / name).read_bytes() == pristine[name]
    assert flips == 36 and rejected == flips
    assert len(list((work / "quarantine" / "units").iterdir())) == flips


def test_a_bit_flip_in_a_samples_file_recomputes_its_unit(fresh, work):
    names = unit_files(fresh)[:3]
    rng = random.Random(7)
    for name in names:
        path = work / "samples" / name
        data = bytearray(path.read_bytes())
        data[rng.randrange(len(data))] ^= 1 << rng.randrange(8)
        path.write_bytes(bytes(data))
    result, lines = rerun(work)
    assert sorted(result.computed) == sorted(n[:-len(".parquet")] for n in names)
    assert all(line.startswith("quarantined samples/") for line in lines) and len(lines) == 3
    assert ResultStore(work).read_samples().equals(ResultStore(fresh).read_samples())
    assert result.rows == reference_rows(fresh)


def test_a_unit_file_copied_over_another_units_name_is_recomputed(fresh, work):
    source, target = unit_files(fresh)[0], unit_files(fresh)[1]
    shutil.copyfile(work / "units" / source, work / "units" / target)
    result, lines = rerun(work)
    assert result.computed == [target[:-len(".parquet")]]
    assert len(lines) == 1 and f"units/{target}: holds unit '{source[:-8]}'" in lines[0]
    assert "quarantine/units/" in lines[0]
    assert result.rows == reference_rows(fresh)


def test_a_unit_file_of_a_run_with_other_trials_is_recomputed(fresh, work, tmp_path):
    other = tmp_path / "other"
    run_spec(load_spec("smoke", ["trials=61"]), other, progress=False, log=lambda _: None)
    name = unit_files(fresh)[2]
    shutil.copyfile(other / "units" / name, work / "units" / name)
    result, lines = rerun(work)
    assert result.computed == [name[:-len(".parquet")]]
    assert len(lines) == 1 and "other settings (trials)" in lines[0]
    assert result.rows == reference_rows(fresh)
    assert {row["n"] for row in result.rows} == {60}


def test_truncated_empty_garbage_and_unsealed_files_do_not_block_the_resume(fresh, work):
    names = unit_files(fresh)[:4]
    truncated, empty, garbage, unsealed = (work / "units" / name for name in names)
    truncated.write_bytes(truncated.read_bytes()[: truncated.stat().st_size // 2])
    empty.write_bytes(b"")
    garbage.write_bytes(random.Random(1).randbytes(3000))
    pq.write_table(pq.read_table(unsealed).replace_schema_metadata(None), unsealed)
    shutil.copyfile(work / "units" / unit_files(fresh)[5], work / "units" / "c9-stray.parquet")
    result, lines = rerun(work)
    assert sorted(result.computed) == sorted(name[:-len(".parquet")] for name in names)
    assert len(lines) == 5
    reasons = " ".join(lines)
    assert "not a complete Parquet file" in reasons and "is empty" in reasons
    assert "carries no identity" in reasons
    assert "quarantined units/c9-stray.parquet: is not a unit of the spec in spec.toml; moved " \
        "to quarantine/units/c9-stray." in reasons
    assert sorted(unit_files(work)) == unit_files(fresh)
    assert result.rows == reference_rows(fresh)


def test_fingerprints_are_part_of_the_identity(tmp_path):
    out = tmp_path / "run"
    first, _ = rerun(out, fingerprints={"model": "sha256:aa"})
    assert len(first.computed) == 6
    same, lines = rerun(out, fingerprints=lambda unit: {"model": "sha256:aa"})
    assert same.computed == [] and lines == []
    other, lines = rerun(out, fingerprints={"model": "sha256:bb"})
    assert len(other.computed) == 6 and len(lines) == 6
    assert all("other fingerprints (model)" in line for line in lines)
    assert other.rows == first.rows
    assert ResultStore(out).verify().summary() == "6 unit files ok, 0 problems"


def test_a_leftover_temporary_file_is_removed_by_the_next_run(work):
    leftovers = [work / ".results.csv.k3j2x9.tmp", work / "units" / ".c0-x.parquet.a1b2.tmp",
                 work / "samples" / ".c0-x.parquet.zz.tmp"]
    for path in leftovers:
        path.write_bytes(b"half a file")
    keep = work / "units" / "notes.tmp"  # not a temporary file of a write: left alone
    keep.write_bytes(b"x")
    result, lines = rerun(work)
    assert result.computed == [] and lines == []
    assert not any(path.exists() for path in leftovers) and keep.exists()


# ----------------------------------------------------------------------------- one writer

def _wait_for(predicate, process, what):
    deadline = time.monotonic() + TIMEOUT
    while time.monotonic() < deadline and process.poll() is None and not predicate():
        time.sleep(0.05)
    assert predicate(), f"{what} (exit status {process.poll()})"


def test_two_runs_of_different_specs_into_one_new_folder(tmp_path):
    out = tmp_path / "run"
    runs = [subprocess.Popen(cli("run", "smoke", "--set", f"trials={trials}", "--out", out,
                                 "--quiet", "--no-report"), env=ENV, text=True,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE)
            for trials in (60, 61)]
    outputs = [run.communicate(timeout=TIMEOUT) for run in runs]
    codes = [run.returncode for run in runs]
    assert sorted(codes) == [0, 2], outputs
    loser = outputs[codes.index(2)][1]
    assert loser.startswith(f"error: --out: {out} ") and (
        "is in use by another run (pid" in loser or "holds results of another spec" in loser)
    winner = (60, 61)[codes.index(0)]
    found = ResultStore(out).verify()
    assert found.summary() == "6 unit files ok, 0 problems"
    assert {row["n"] for row in ResultStore(out).read_rows()} == {winner}
    assert load_spec(out / "spec.toml").trials == winner


def test_two_runs_of_the_same_spec_with_wait_compute_each_unit_once(tmp_path):
    out = tmp_path / "run"
    runs = [subprocess.Popen(cli("run", "smoke", *[a for s in SMALL for a in ("--set", s)],
                                 "--out", out, "--quiet", "--no-report", "--wait"),
                             env=ENV, text=True, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE) for _ in range(2)]
    outputs = [run.communicate(timeout=TIMEOUT) for run in runs]
    assert [run.returncode for run in runs] == [0, 0], outputs
    computed = sorted(int(re.search(r"6 units \((\d+) computed now", stdout).group(1))
                      for stdout, _ in outputs)
    assert computed == [0, 6]


def test_a_held_folder_refuses_or_waits(tmp_path):
    out = tmp_path / "run"
    command = cli("run", "smoke", "--set", "trials=60", "--out", out, "--quiet", "--no-report")
    with ResultStore(out).lock():
        assert f"pid {os.getpid()} on " in (out / ".lock").read_text()
        refused = subprocess.run(command, env=ENV, text=True, capture_output=True,
                                 timeout=TIMEOUT)
        assert refused.returncode == 2
        assert refused.stderr.startswith(f"error: --out: {out} is in use by another run (pid "
                                         f"{os.getpid()} on "), refused.stderr
        assert "--wait" in refused.stderr and len(refused.stderr.splitlines()) == 1
        log = tmp_path / "waiting.txt"
        with open(log, "w") as handle:
            waiting = subprocess.Popen(command + ["--wait"], env=ENV, stdout=subprocess.DEVNULL,
                                       stderr=handle)
        _wait_for(lambda: "waiting for" in log.read_text(), waiting, "no waiting message")
        assert f"another run holds it (pid {os.getpid()} on " in log.read_text()
        assert waiting.poll() is None  # still waiting while the lock is held
    assert waiting.wait(timeout=TIMEOUT) == 0, log.read_text()
    assert ResultStore(out).verify().summary() == "6 unit files ok, 0 problems"


def test_the_lock_of_a_killed_run_is_taken_over(tmp_path):
    out = tmp_path / "run"
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time\nfrom guidelab.studies.store import "
         "ResultStore\nwith ResultStore(sys.argv[1]).lock():\n    print('locked', flush=True)"
         "\n    time.sleep(600)\n", str(out)], env=ENV, text=True, stdout=subprocess.PIPE)
    assert holder.stdout.readline().strip() == "locked"
    assert f"pid {holder.pid} on " in (out / ".lock").read_text()
    with pytest.raises(FolderBusyError, match=f"pid {holder.pid} on "):
        rerun(out)
    holder.send_signal(signal.SIGKILL)
    holder.wait(timeout=TIMEOUT)
    result, _ = rerun(out)  # the kernel released the dead run's lock
    assert len(result.computed) == 6


# ----------------------------------------------------------------------------- I/O errors

def test_a_read_only_units_folder_error_names_it(tmp_path):
    """A real read-only folder; as root (who writes anywhere) the run drops the capabilities
    that let root ignore permissions."""
    out = tmp_path / "run"
    command = cli("run", "smoke", "--set", "trials=60", "--out", out, "--quiet", "--no-report")
    first = subprocess.run(command, env=ENV, text=True, capture_output=True, timeout=TIMEOUT)
    assert first.returncode == 0, first.stderr
    if os.geteuid() == 0:
        if shutil.which("setpriv") is None:
            pytest.skip("running as root without setpriv: a folder cannot be read-only")
        command = ["setpriv", "--inh-caps=-all", "--ambient-caps=-all",
                   "--bounding-set=-dac_override,-dac_read_search", "--", *command]
    name = unit_files(out)[0]
    (out / "units" / name).unlink()
    (out / "units").chmod(0o555)
    try:
        second = subprocess.run(command, env=ENV, text=True, capture_output=True,
                                timeout=TIMEOUT)
    finally:
        (out / "units").chmod(0o755)
    assert second.returncode == 2
    assert second.stderr == f"error: cannot write {out / 'units' / name}: Permission denied\n"
    assert not [p for p in (out / "units").iterdir() if p.name.endswith(".tmp")]
    assert unit_files(out) == sorted(set(unit_files(out)) - {name})


def test_a_full_disk_names_the_file(tmp_path, monkeypatch):
    def full(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "fsync", full)
    out = tmp_path / "run"
    with pytest.raises(StoreIOError) as info:
        rerun(out)
    assert str(info.value) == f"cannot write {out / 'spec.toml'}: No space left on device"
    assert info.value.errno == errno.ENOSPC
    assert not list(out.iterdir()) or [p.name for p in out.iterdir()] == [".lock"]
    result = invoke("run", "smoke", "--set", "trials=60", "--out", out, "--quiet")
    assert result.exit_code == 2
    assert result.output == (f"error: cannot write {out / 'spec.toml'}: No space left on "
                             f"device\n")


def test_an_unreadable_spec_toml_names_the_file(work):
    (work / "spec.toml").write_bytes(b'name = "sm\xffoke"\n')
    with pytest.raises(ValueError, match=f"^out: cannot read {re.escape(str(work))}/spec.toml: "
                                         f"not UTF-8 text"):
        rerun(work)
    result = invoke("verify", work)
    assert result.exit_code == 2
    assert result.output.startswith(f"error: run_dir: cannot read {work / 'spec.toml'}: not "
                                    f"UTF-8 text")


# ----------------------------------------------------------------------------- verify, report

def test_verify_a_clean_and_a_corrupted_folder(fresh, work, tmp_path):
    clean = invoke("verify", fresh)
    assert clean.exit_code == 0 and clean.output == "6 unit files ok, 0 problems\n"
    flipped, source, target = unit_files(work)[:3]
    data = bytearray((work / "units" / flipped).read_bytes())
    data[len(data) // 3] ^= 0x10
    (work / "units" / flipped).write_bytes(bytes(data))
    shutil.copyfile(work / "units" / source, work / "units" / target)
    before = {name: (work / "units" / name).read_bytes() for name in unit_files(work)}
    found = invoke("verify", work)
    assert found.exit_code == 1
    lines = found.output.splitlines()
    assert lines == [f"units/{flipped}: checksum mismatch: its bytes changed after it was "
                     f"written",
                     f"units/{target}: holds unit '{source[:-8]}', not '{target[:-8]}' (a "
                     f"file copied over another unit's name?)",
                     "4 unit files ok, 2 problems; 2 units not computed yet"]
    assert {name: (work / "units" / name).read_bytes() for name in unit_files(work)} == before
    assert not (work / "quarantine").exists()  # read-only
    moved = invoke("verify", work, "--quarantine")
    assert moved.exit_code == 1 and moved.output.count("; moved to quarantine/units/") == 2
    again = invoke("verify", work)
    assert again.exit_code == 0
    assert again.output == "4 unit files ok, 0 problems; 2 units not computed yet\n"
    for bad in (tmp_path / "missing", tmp_path):
        result = invoke("verify", bad)
        assert result.exit_code == 2 and result.output.startswith("error: run_dir: ")


def test_the_report_reads_through_the_store(work):
    from guidelab.report import write_report

    name = unit_files(work)[0]
    data = bytearray((work / "units" / name).read_bytes())
    data[100] ^= 1
    (work / "units" / name).write_bytes(bytes(data))
    page = write_report(work).read_text()
    assert f"units/{name} could not be read (checksum mismatch" in page
    assert (work / "units" / name).exists()  # the report moves nothing
