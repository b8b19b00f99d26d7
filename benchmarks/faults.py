"""Run every fault test of issue 28 and print one table row per finding: what was broken, the tests
that reproduce it, their outcome and time.

    python benchmarks/faults.py            # ~70 s on 2 cores; exit 0 if every test passed

The tests themselves are in tests/runtime/store/test_reliability_files.py, tests/runtime/pipeline/test_reliability_sweep.py,
tests/runtime/pipeline/test_reliability_resources.py, tests/runtime/engine/test_draws.py and
tests/runtime/pipeline/test_dask_processes.py (real `dask scheduler` / `dask worker` processes on 127.0.0.1: needs
`pip install -e '.[distributed]'`). The full-disk test on a real 1 MB tmpfs needs root (mount); it is
skipped, and shown as skipped, otherwise. Each test was checked to fail on the code before the fix,
except the two marked "coverage" (they pin down behaviour that already worked); of the resource tests
(memory, plots, linked directories) every one fails on the code before, most at once (no
--max-memory option), the linked-directory, plot and MemoryError ones by what they check.
"""
from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FILES = "tests/runtime/store/test_reliability_files.py"
SWEEPS = "tests/runtime/pipeline/test_reliability_sweep.py"
DASK = "tests/runtime/pipeline/test_dask_processes.py"
RESOURCES = "tests/runtime/pipeline/test_reliability_resources.py"
DRAWS = "tests/runtime/engine/test_draws.py"
CHECK = "test_check_refuses_the_issues_examples_at_once_naming_the_field_and_what_fits"

FINDINGS = [
    ("a run follows symlinks planted at spec.json.tmp, summary.json.tmp, metrics.jsonl.tmp",
     [(FILES, "test_a_run_never_writes_through_links_planted_at_its_temporary_names"),
      (FILES, "test_a_sweep_never_writes_through_links_planted_at_its_temporary_names")]),
    ("--out naming a file or an unwritable path: internal error (exit 3)",
     [(FILES, "test_out_naming_a_file_or_an_unwritable_path_is_a_usage_error")]),
    ("apdspec check on a FIFO hangs",
     [(FILES, "test_check_and_fmt_refuse_a_fifo_instead_of_hanging")]),
    ("a full disk: exit 3, .tmp files left, status can stay ok",
     [(FILES, "test_a_full_disk_while_logging_is_one_line_and_the_run_resumes"),
      (FILES, "test_a_full_disk_at_the_report_never_leaves_the_run_ok"),
      (FILES, "test_a_full_disk_at_a_rename_leaves_no_temporary_file_and_no_ok"),
      (FILES, "test_a_full_disk_stops_a_sweep_with_one_line"),
      (FILES, "test_a_really_full_disk_at_any_point_is_one_line_and_resumable")]),
    ("a finished sweep point whose arrays were deleted is reused",
     [(SWEEPS, "test_a_finished_point_whose_arrays_are_gone_runs_again")]),
    ("NumPy RuntimeWarnings printed before 'run diverged'",
     [(FILES, "test_no_numpy_warning_comes_before_run_diverged")]),
    ("one killed worker under --jobs 2 marks every point error (BrokenProcessPool)",
     [(SWEEPS, "test_a_killed_jobs_worker_loses_only_its_points_interval"),
      (SWEEPS, "test_a_point_whose_worker_keeps_dying_is_an_error_and_the_others_finish")]),
    ("a killed dask scheduler: 35-line traceback, no resume line, orphans finish points",
     [(DASK, "test_losing_the_dask_scheduler_is_one_line_with_the_resume_command_and_no_orphan_writes")]),
    ("a scheduler with no workers waits silently",
     [(DASK, "test_a_scheduler_without_workers_says_so")]),
    ("the docs' dask commands listen on all interfaces",
     [(DASK, "test_documented_dask_commands_listen_on_loopback")]),
    ("CI never installs the distributed extra",
     [(DASK, "test_ci_runs_the_readme_test_command_which_installs_dask")]),
    ("coverage: a dask sweep equals --jobs 1 byte for byte",
     [(DASK, "test_a_sweep_on_dask_processes_is_byte_identical_to_jobs_1")]),
    ("coverage: a dask worker killed mid-point resumes it from its checkpoint",
     [(DASK, "test_a_dask_worker_killed_mid_point_resumes_it_from_its_checkpoint")]),
    ("check says ok to ~1.11 TiB (d_embed 10000, components 100000), run dies after target training",
     [(RESOURCES, f"{CHECK}[decompose.components]"), (RESOURCES, "test_run_refuses_before_anything_runs_or_is_written"),
      (RESOURCES, "test_what_fits_does_fit"), (RESOURCES, "test_the_machines_memory_is_the_default_limit"),
      (RESOURCES, "test_max_memory_takes_sizes_and_refuses_nonsense"), (RESOURCES, "test_resume_checks_the_saved_spec")]),
    ("-s target.features=10_000_000, decompose.batch=100_000_000, replicates=1_000_000 do the same",
     [(RESOURCES, f"{CHECK}[target.features]"), (RESOURCES, f"{CHECK}[decompose.batch]"),
      (RESOURCES, f"{CHECK}[replicates]"),
      (RESOURCES, "test_every_sweep_point_is_checked_and_the_culprit_value_located"),
      (RESOURCES, "test_jobs_that_would_not_fit_together_are_lowered_or_refused")]),
    ("report.eval_batches = 10_000_000: ok, then minutes in the report",
     [(RESOURCES, f"{CHECK}[report.eval_batches]")]),
    ("components drawn in float64 for float32 runs (2x the peak)",
     [(DRAWS, "test_a_float32_init_never_holds_a_float64_copy")]),
    ("check's calibration allocates the whole model (3.4 GiB spec: 28.7 s, 4.35 GB RSS)",
     [(RESOURCES, "test_check_of_a_large_spec_calibrates_on_a_bounded_slice")]),
    ("a MemoryError: internal error, exit 3",
     [(RESOURCES, "test_a_memory_error_that_still_happens_is_one_line_exit_1_and_status_error"),
      (RESOURCES, "test_a_real_memory_error_is_one_line_exit_1_and_status_error")]),
    ("plots written non-atomically",
     [(RESOURCES, "test_plots_never_write_through_a_link_planted_at_their_name")]),
    ("a run directory's subdirectories that are symbolic links are followed",
     [(RESOURCES, f"test_out_with_a_linked_directory_is_refused_before_anything_runs[{s}]")
      for s in ("plots", "checkpoints", "replicates", "replicates/1")]
     + [(RESOURCES, f"test_a_link_planted_while_the_run_lasts_is_refused_and_the_run_marked_error[{s}]")
        for s in ("plots", "checkpoints", "replicates")]
     + [(RESOURCES, "test_report_refuses_a_linked_plots_directory"),
        (RESOURCES, "test_a_sweep_point_directory_that_is_a_link_is_that_points_error")]),
]


def main() -> int:
    t0 = time.time()
    with tempfile.TemporaryDirectory() as tmp:
        report = os.path.join(tmp, "junit.xml")
        env = dict(os.environ, OPENBLAS_NUM_THREADS="1", PYTHONPATH=ROOT)
        subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", f"--junitxml={report}",
                        FILES, SWEEPS, RESOURCES, DRAWS, DASK], cwd=ROOT, env=env)
        outcome = {}
        for case in ET.parse(report).getroot().iter("testcase"):
            state = "passed"
            for tag in ("failure", "error", "skipped"):
                if case.find(tag) is not None:
                    state = {"failure": "FAILED", "error": "ERROR", "skipped": "skipped"}[tag]
            outcome[case.get("name")] = (state, float(case.get("time", 0)))
    print(f"\n| finding | test | outcome | time (s) |\n|---|---|---|---|")
    bad = 0
    for finding, tests in FINDINGS:
        for i, (path, name) in enumerate(tests):
            state, seconds = outcome.get(name, ("not run", 0.0))
            bad += state in ("FAILED", "ERROR", "not run")
            print(f"| {finding if i == 0 else ''} | `{os.path.basename(path)}::{name}` | {state} | {seconds:.1f} |")
    listed = {name for _, tests in FINDINGS for _, name in tests}
    for name in sorted(set(outcome) - listed):
        print(f"| (not a finding) | `{name}` | {outcome[name][0]} | {outcome[name][1]:.1f} |")
    print(f"\n{len(outcome)} tests, {bad} not passing; {time.time() - t0:.0f} s")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
