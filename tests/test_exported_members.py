"""The public API is exactly what `__all__` lists, kept sorted."""

import jobtrace


def test_all_is_sorted_and_unique() -> None:
    assert list(jobtrace.__all__) == sorted(set(jobtrace.__all__))


def test_every_exported_name_exists_and_public_names_are_exported() -> None:
    for name in jobtrace.__all__:
        assert hasattr(jobtrace, name), name
    public = {
        name
        for name, value in vars(jobtrace).items()
        if not name.startswith("_") and not isinstance(value, type(jobtrace))
    }
    public.discard("annotations")
    public -= {"Any", "TYPE_CHECKING"}
    assert public <= set(jobtrace.__all__)
