"""identity_ci_error and dense_ci_error (runtime/analysis/ci_truth.py, VPD notes §6) on hand-made
matrices."""
import numpy as np

from runtime.analysis.ci_truth import dense_ci_error, identity_ci_error


def test_identity_perfect_permuted_with_extra_columns():
    ci = np.zeros((3, 5))
    ci[0, 4], ci[1, 0], ci[2, 2] = 1.0, 0.95, 0.92  # a permutation, two spare columns, within tol
    assert identity_ci_error(ci, 0.1) == 0


def test_identity_counts_off_diagonal_extra_column_and_weak_diagonal():
    ci = np.zeros((3, 5))
    ci[0, 4], ci[1, 0], ci[2, 2] = 1.0, 1.0, 1.0
    ci[0, 0] = 0.5  # off the matched diagonal
    ci[1, 3] = 0.3  # in a spare column
    ci[2, 2] = 0.8  # diagonal below 1 - tol
    assert identity_ci_error(ci, 0.1) == 3
    assert identity_ci_error(ci, 0.2) == 2  # 0.8 >= 1 - 0.2 now; 0.5 and 0.3 are still > 0.2
    assert identity_ci_error(ci, 0.6) == 0


def test_identity_matching_maximises_ci():
    # one subcomponent serving two features: only one of them can be matched to it
    ci = np.array([[1.0, 0.0, 0.0], [1.0, 0.0, 0.0]])
    assert identity_ci_error(ci, 0.1) == 2  # the unmatched 1.0 off-diagonal + the other row's 0.0 diagonal


def test_identity_fewer_columns_than_rows():
    ci = np.eye(3)[:, :2]  # feature 2 has no subcomponent
    assert identity_ci_error(ci, 0.1) == 1


def test_dense_block():
    ci = np.zeros((4, 5))
    ci[:, 1] = [1.0, 0.95, 0.3, 0.0]  # the two block columns, in any position
    ci[:, 3] = [0.2, 1.0, 1.0, 0.9]
    assert dense_ci_error(ci, k=2, tol=0.1) == 0
    ci[2, 0] = 0.3  # an entry > tol after the block
    ci[0, 4] = 0.05  # <= tol: fine
    assert dense_ci_error(ci, k=2, tol=0.1) == 1


def test_dense_column_without_a_full_entry():
    ci = np.zeros((3, 3))
    ci[:, 0] = [0.6, 0.6, 0.6]  # most mass, but no entry >= 0.9
    ci[:, 1] = [1.0, 0.0, 0.0]
    assert dense_ci_error(ci, k=2, tol=0.1) == 1
    assert dense_ci_error(ci, k=4, tol=0.1) == 1 + 1 + 1  # column 0, column 2 (all zero), one missing column
