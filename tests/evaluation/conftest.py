"""Fixtures of the evaluation tests: the hand-computable patch case (:mod:`tests.helpers.patch`)."""

import pytest

from tests.helpers import patch


@pytest.fixture()
def deletion_case(tmp_path):
    """Two images with the same patch: mask A marks the patch salient, mask B everything else;
    plus a row skipped in the store and an ok row whose file has disappeared since. ``(store, root)``."""
    return patch.deletion_case(tmp_path)
