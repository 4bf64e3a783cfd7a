#!/usr/bin/env python3
"""tests/cuda_emu: rewrite `kernel<<<grid, block, smem, stream>>>(args)` into
`emu::launch<FIBERS>(emu::cfg(grid, block, smem, stream), "kernel", kernel, args)`.
FIBERS is true when the kernel (transitively, through __device__ functions of the scanned files) uses
__syncthreads / warp shuffles; those kernels run each thread as a fiber.
usage: transform.py OUT_DIR file.cuh... (all files are scanned for sync-using functions; each is rewritten)"""
import os
import re
import sys

SYNC_PRIMS = {"__syncthreads", "__syncthreads_count", "__shfl_xor_sync", "__shfl_down_sync", "__shfl_up_sync", "__shfl_sync", "__syncwarp"}


def strip_comments(s):
    s = re.sub(r"//[^\n]*", "", s)
    s = re.sub(r"/\*.*?\*/", "", s, flags=re.S)
    return s


def match_brace(s, i):
    """s[i] == '{' -> index of the matching '}'."""
    depth = 0
    for j in range(i, len(s)):
        if s[j] == "{":
            depth += 1
        elif s[j] == "}":
            depth -= 1
            if depth == 0:
                return j
    raise ValueError("unbalanced braces")


def functions(src):
    """(name, body) of every __device__ / __global__ function definition."""
    s = strip_comments(src)
    out = []
    for m in re.finditer(r"__(device|global)__", s):
        # name: the identifier right before the first '(' after the qualifier (skipping __launch_bounds__(...))
        k = m.end()
        rest = s[k:]
        rest2 = re.sub(r"__launch_bounds__\([^)]*\)", lambda x: " " * len(x.group(0)), rest)
        p = rest2.find("(")
        semi = rest2.find(";")
        brace = rest2.find("{")
        if p < 0 or brace < 0 or (0 <= semi < brace and semi < p):
            continue
        name_m = re.search(r"([A-Za-z_][A-Za-z_0-9]*)\s*$", rest2[:p])
        if not name_m:
            continue
        name = name_m.group(1)
        if name == "operator":
            continue
        b0 = k + brace
        b1 = match_brace(s, b0)
        out.append((name, s[b0:b1 + 1]))
    return out


def sync_names(sources):
    funcs = []
    for src in sources:
        funcs += functions(src)
    names = set(SYNC_PRIMS)
    changed = True
    while changed:
        changed = False
        for name, body in funcs:
            if name in names:
                continue
            if any(re.search(r"\b" + re.escape(n) + r"\b", body) for n in names):
                names.add(name)
                changed = True
    return names - SYNC_PRIMS, {n for n, _ in funcs}


def kernel_expr_start(s, i):
    """s[:i] ends with the kernel expression (whitespace allowed before <<<): its start index."""
    j = i
    while j > 0 and s[j - 1].isspace():
        j -= 1
    end = j
    while j > 0:
        c = s[j - 1]
        if c == ">":  # template argument list: walk back to the matching '<'
            depth = 0
            while True:
                j -= 1
                if s[j] == ">":
                    depth += 1
                elif s[j] == "<":
                    depth -= 1
                    if depth == 0:
                        break
            while j > 0 and s[j - 1].isspace():
                j -= 1
            continue
        if c.isalnum() or c == "_" or c == ":":
            j -= 1
            continue
        break
    return j, end


def dynamic_shared(src):
    """`extern __shared__ T name[];` -> a pointer to the launch's dynamic shared memory (emu::dynamic_smem)."""
    return re.sub(r"extern\s+__shared__\s+(?:__align__\(\d+\)\s+)?([A-Za-z_][\w:]*)\s+(\w+)\s*\[\s*\]\s*;",
                  r"\1* const \2 = static_cast<\1*>(emu::dynamic_smem);", src)


def transform(src, sync):
    src = dynamic_shared(src)
    out = []
    pos = 0
    n = 0
    while True:
        i = src.find("<<<", pos)
        if i < 0:
            out.append(src[pos:])
            break
        k0, k1 = kernel_expr_start(src, i)
        kernel = src[k0:k1]
        j = src.find(">>>", i)
        cfg = src[i + 3:j]
        a0 = src.find("(", j)
        assert src[j + 3:a0].strip() == "", "expected '(' after >>>"
        depth = 0
        for a1 in range(a0, len(src)):
            if src[a1] == "(":
                depth += 1
            elif src[a1] == ")":
                depth -= 1
                if depth == 0:
                    break
        args = src[a0 + 1:a1]
        base = re.sub(r"<.*", "", kernel).split("::")[-1].strip()
        fib = "true" if base in sync else "false"
        name = " ".join(kernel.split())
        args_s = args.strip()
        out.append(src[pos:k0])
        out.append(f'emu::launch<{fib}>(emu::cfg({" ".join(cfg.split())}), "{name}", {kernel}'
                   + (", " + args_s if args_s else "") + ")")
        pos = a1 + 1
        n += 1
    return "".join(out), n


def main():
    out_dir = sys.argv[1]
    files = sys.argv[2:]
    sources = [open(f).read() for f in files]
    sync, allf = sync_names(sources)
    sys.stderr.write("sync-using device functions/kernels: " + " ".join(sorted(sync)) + "\n")
    for f, src in zip(files, sources):
        t, n = transform(src, sync)
        dst = os.path.join(out_dir, os.path.basename(f))
        open(dst, "w").write("// GENERATED by tests/cuda_emu/transform.py from " + f + " (do not edit)\n" + t)
        sys.stderr.write(f"{f}: {n} launches rewritten -> {dst}\n")


if __name__ == "__main__":
    main()
