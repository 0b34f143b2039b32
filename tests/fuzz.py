# A small mutation fuzzer for the parsers that take outside input (tests/test_fuzz.py): valid
# seeds, mutated by byte flips, insertions, deletions, splices and tokens that broke parsers
# before (deep nesting, huge integers, NaN, newlines inside fields, NULs, invalid UTF-8).
# Deterministic per parser (seeded), so a failure names an input that reproduces.
# LANMESH_FUZZ_CASES sets the cases per parser: small in `make test`, ≥ 1 M in `make fuzz`.
import os
import random

CASES = int(os.environ.get("LANMESH_FUZZ_CASES") or 1500)
TOKENS = [b"[" * 64, b"{" * 40, b'{"a":' * 40, b"9" * 30, b"-" + b"9" * 25, b"NaN", b"Infinity",
          b"1e999", b"\n", b"\r\n", b"\x00", b"\xff\xfe", b"\xc3\x28", b'"', b"\\", b"\\u0000",
          b"null", b"true", b"[]", b"{}", b"\xa7\x02", b"#>", b"#<", b" OK ", b"ERR ", b"=",
          b"errno=0\n\n", b"option ", b"list ", b"config ", b"'", b"\x1b[2J", b"\xef\xbf\xbf"]


def mutate(rnd, data, seeds):
    data = bytearray(data)
    for _ in range(rnd.choice((1, 1, 2, 3, 6))):
        op = rnd.randrange(8)
        n = len(data)
        if op == 0 and n:
            data[rnd.randrange(n)] ^= 1 << rnd.randrange(8)
        elif op == 1:
            data[rnd.randrange(n + 1):0] = bytes(rnd.randrange(256) for _ in range(rnd.randrange(1, 8)))
        elif op == 2 and n:
            i = rnd.randrange(n)
            del data[i:i + rnd.randrange(1, 16)]
        elif op == 3 and n:
            i = rnd.randrange(n)
            data[i:i] = data[i:i + rnd.randrange(1, 32)]
        elif op == 4:
            data[rnd.randrange(n + 1):0] = rnd.choice(TOKENS)
        elif op == 5 and n:
            del data[rnd.randrange(n):]                  # truncation
        elif op == 6:
            other = rnd.choice(seeds)
            i = rnd.randrange(len(other) + 1)
            data[rnd.randrange(n + 1):0] = other[i:i + rnd.randrange(1, 64)]
        elif op == 7 and n:
            data[rnd.randrange(n)] = rnd.choice(b"0123456789\"{}[],:-.\n =")
    return bytes(data)


def inputs(name, seeds, cases=None):
    """Yield `cases` mutated inputs (and the seeds themselves first)."""
    rnd = random.Random(name)
    seeds = [bytes(s) for s in seeds]
    yield from seeds
    for _ in range(cases or CASES):
        yield mutate(rnd, rnd.choice(seeds), seeds)


def run(name, seeds, parse, allowed, cases=None):
    """parse(data) for every input; only `allowed` exceptions may escape. → (ok, rejected)."""
    ok = rejected = 0
    for data in inputs(name, seeds, cases):
        try:
            parse(data)
            ok += 1
        except allowed:
            rejected += 1
        except Exception as e:
            raise AssertionError(f"{name}: {type(e).__name__}: {e} for input {data[:300]!r}") from e
    return ok, rejected
