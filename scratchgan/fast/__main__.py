"""`python -m scratchgan.fast`: the table of fast paths, and which run on this machine."""
from . import INACTIVE, TABLE, active, enabled


def main():
    from ..backend import BackendError
    here = {"numpy": active("numpy")}
    try:
        here["cupy"] = active("cupy")
        cupy_note = ""
    except BackendError as e:
        here["cupy"], cupy_note = {}, f" (CuPy: {str(e).split(';')[0]})"
    print(f"fast paths {'on' if enabled() else 'off (SCRATCHGAN_REFERENCE=1)'}{cupy_note}")
    print("| reference | backend | replacement | compares | active here |")
    print("|---|---|---|---|---|")
    for name, entries in TABLE.items():
        for backend, (replacement, exact) in entries.items():
            print(f"| {name} | {backend} | {replacement} | {exact} | {'yes' if name in here[backend] else 'no'} |")
    for name, entries in INACTIVE.items():  # written and tested, switched off: why, for each
        for backend, (replacement, exact, why) in entries.items():
            print(f"| {name} | {backend} | {replacement} | {exact} | no: {why} |")


if __name__ == "__main__":
    main()
