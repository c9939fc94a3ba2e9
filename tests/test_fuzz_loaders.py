"""Property: whatever bytes an archive holds, the loader raises only DataError, with one line."""
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

import archive_factory as factory
from iivformer import archives
from iivformer.errors import DataError


@pytest.fixture(scope="module")
def valid_archives(tmp_path_factory):
    folder = tmp_path_factory.mktemp("valid")
    positions_3d, positions_2d = factory.positions(frames=4, extra_2d=1)
    # keep it small: two subjects, one take each; stored both compressed and not
    positions_3d = {s: {"Walking": positions_3d[s]["Walking"]} for s in ("S1", "S9")}
    positions_2d = {s: {"Walking": positions_2d[s]["Walking"]} for s in ("S1", "S9")}
    path_3d, path_2d = factory.write(folder, positions_3d, positions_2d)
    plain = folder / "plain_2d.npz"
    np.savez(plain, positions_2d=positions_2d, metadata=factory.METADATA)
    return [path_3d.read_bytes(), path_2d.read_bytes(), plain.read_bytes()]


mutations = st.lists(st.tuples(st.floats(0, 1, exclude_max=True), st.integers(0, 255)), min_size=1, max_size=8)


@settings(max_examples=150, deadline=2000, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(which=st.integers(0, 2), edits=mutations, cut=st.one_of(st.none(), st.floats(0, 1)))
def test_mutated_archives_raise_only_data_errors(tmp_path, valid_archives, which, edits, cut):
    content = bytearray(valid_archives[which])
    for position, value in edits:
        content[int(position * len(content))] = value
    if cut is not None:
        content = content[: int(cut * len(content))]
    path = tmp_path / "mutated.npz"
    path.write_bytes(bytes(content))
    try:
        loaded = archives.read_npz(path)
        if "positions_3d" in loaded:
            archives.load_positions_3d(path)
        else:
            archives.load_positions_2d(path)
    except DataError as error:
        message = str(error)
        assert message.startswith(str(path)) and "\n" not in message
