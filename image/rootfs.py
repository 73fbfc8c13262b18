#!/usr/bin/env python3
"""Root filesystems of the flash-host images, assembled and checked without running them.

Used by scripts/build-image.sh (Python 3 standard library only):

  rootfs.py base DIR --certs FILE
      the skeleton every image has: /app, /root/.runpod, /tmp (1777), /etc/passwd,
      /etc/group and the CA bundle at /etc/ssl/certs/ca-certificates.crt.

  rootfs.py gpu-libs DIR --wheels DIR --flash-host BIN
      the GPU image's libraries, in three trees under DIR (one image layer each, so a new
      flash-host does not re-upload CUDA): onnxruntime/ (ONNX Runtime and its CUDA provider
      from the onnxruntime-gpu wheel), cuda/ (the CUDA and cuDNN libraries of the nvidia-*
      wheels) and glibc/ (the C and C++ runtime these and the glibc flash-host need, copied
      from this machine, with the dynamic loader at /lib64/ld-linux-x86-64.so.2).

  rootfs.py check DIR --variant cpu|gpu < `buildah inspect --type image NAME`
      checks an extracted root filesystem against its image config: the entrypoint, /app,
      /root/.runpod, /tmp and the CA bundle exist; cpu: the entrypoint is a static
      executable; gpu: every ELF file's DT_NEEDED libraries resolve inside DIR (RUNPATH, the
      image's LD_LIBRARY_PATH, the system directories), ORT_DYLIB_PATH is in DIR, and the
      image's own loader, given only the image's libraries, binds every library (`ldd -r`
      style: LD_BIND_NOW, missing symbols and symbol versions reported) and runs
      `flash-host --version`. Exits 1 with the list of problems.
"""

import argparse
import fnmatch
import json
import mmap
import os
import shutil
import stat
import struct
import subprocess
import sys
import zipfile

# Where glibc's loader looks when neither RUNPATH, LD_LIBRARY_PATH nor ld.so.cache has a
# library (Debian's glibc; `ld.so --help` lists them).
SYSTEM_DIRS = ["/lib/x86_64-linux-gnu", "/usr/lib/x86_64-linux-gnu", "/lib", "/usr/lib"]
LOADER = "ld-linux-x86-64.so.2"
LIBDIR = "/usr/lib/x86_64-linux-gnu"
# Provided by the NVIDIA driver, which the container runtime mounts at start (never shipped).
DRIVER_LIBS = {"libcuda.so.1", "libnvidia-ml.so.1"}

ORT_DIR = "/opt/onnxruntime/lib"
CUDA_DIR = "/opt/nvidia/lib"
# (wheel file prefix, directory in the wheel, directory in the image, files kept) of the
# GPU image. The TensorRT provider is left out: flash-nn registers only CUDA, and TensorRT is
# not shipped.
GPU_WHEEL_FILES = [
    ("onnxruntime_gpu-", "onnxruntime/capi/", ORT_DIR,
     ["libonnxruntime.so.*", "libonnxruntime_providers_shared.so",
      "libonnxruntime_providers_cuda.so"]),
    ("nvidia_cuda_runtime_cu12-", "nvidia/cuda_runtime/lib/", CUDA_DIR, ["libcudart.so.12"]),
    ("nvidia_cuda_nvrtc_cu12-", "nvidia/cuda_nvrtc/lib/", CUDA_DIR,
     ["libnvrtc.so.12", "libnvrtc-builtins.so.*"]),
    ("nvidia_cublas_cu12-", "nvidia/cublas/lib/", CUDA_DIR,
     ["libcublas.so.12", "libcublasLt.so.12"]),
    ("nvidia_cufft_cu12-", "nvidia/cufft/lib/", CUDA_DIR, ["libcufft.so.11"]),
    ("nvidia_curand_cu12-", "nvidia/curand/lib/", CUDA_DIR, ["libcurand.so.10"]),
    ("nvidia_nvjitlink_cu12-", "nvidia/nvjitlink/lib/", CUDA_DIR, ["libnvJitLink.so.12"]),
    ("nvidia_cudnn_cu12-", "nvidia/cudnn/lib/", CUDA_DIR, ["libcudnn*.so.9"]),
]


# ---------------------------------------------------------------------------------------
# ELF


class Elf:
    """What the dynamic loader reads of one x86-64 ELF file."""

    def __init__(self, path):
        with open(path, "rb") as f:
            data = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        if data[:4] != b"\x7fELF" or data[4] != 2 or data[5] != 1:
            raise ValueError(f"{path}: not a 64-bit little-endian ELF file")
        (phoff,) = struct.unpack_from("<Q", data, 32)
        phentsize, phnum = struct.unpack_from("<HH", data, 54)
        self.interp = None
        loads, dynamic = [], None
        for i in range(phnum):
            p_type, _flags, off, vaddr, _paddr, filesz, _memsz, _align = struct.unpack_from(
                "<IIQQQQQQ", data, phoff + i * phentsize)
            if p_type == 3:  # PT_INTERP
                self.interp = data[off:off + filesz].rstrip(b"\0").decode()
            elif p_type == 1:  # PT_LOAD
                loads.append((vaddr, off, filesz))
            elif p_type == 2:  # PT_DYNAMIC
                dynamic = (off, filesz)
        self.needed, self.runpath = [], []
        if dynamic is None:
            return
        entries, strtab = [], None
        off, size = dynamic
        for i in range(size // 16):
            tag, val = struct.unpack_from("<qQ", data, off + i * 16)
            if tag == 0:  # DT_NULL
                break
            if tag == 5:  # DT_STRTAB, a virtual address
                strtab = next(o + val - v for v, o, s in loads if v <= val < v + s)
            entries.append((tag, val))

        def string(offset):
            end = data.find(b"\0", strtab + offset)
            return data[strtab + offset:end].decode()

        for tag, val in entries:
            if tag == 1:  # DT_NEEDED
                self.needed.append(string(val))
            elif tag in (15, 29):  # DT_RPATH, DT_RUNPATH
                self.runpath += string(val).split(":")

    @property
    def is_static(self):
        """No program interpreter and no shared library dependencies."""
        return self.interp is None and not self.needed


def is_elf(path):
    try:
        with open(path, "rb") as f:
            return f.read(4) == b"\x7fELF"
    except OSError:
        return False


def inside(root, path):
    """The image path `path` as a path on this machine, under `root`."""
    return os.path.join(root, path.lstrip("/"))


def real_in_root(root, path, depth=0):
    """The image path `path` with its symbolic links resolved as the image sees them
    (absolute link targets are the image's), or None when it does not exist."""
    if depth > 40:
        return None
    parts = [p for p in path.split("/") if p]
    done = "/"
    for i, part in enumerate(parts):
        here = os.path.join(done, part)
        host = inside(root, here)
        if os.path.islink(host):
            target = os.readlink(host)
            target = target if target.startswith("/") else os.path.join(done, target)
            rest = "/".join(parts[i + 1:])
            return real_in_root(root, os.path.normpath(os.path.join(target, rest)), depth + 1)
        if not os.path.lexists(host):
            return None
        done = here
    return done


def resolve_in_root(root, name, dirs):
    """The library `name` as the first of `dirs` (image paths) that holds it, or None."""
    for d in dirs:
        real = real_in_root(root, os.path.join(d, name))
        if real and os.path.isfile(inside(root, real)):
            return real
    return None


# ---------------------------------------------------------------------------------------
# base


def write(path, text, mode=0o644):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write(text)
    os.chmod(path, mode)


def cmd_base(args):
    root = args.dir
    for d in ["app", "root/.runpod", "root/.cache", "etc/ssl/certs", "tmp"]:
        os.makedirs(os.path.join(root, d), exist_ok=True)
    os.chmod(os.path.join(root, "tmp"), 0o1777)
    os.chmod(os.path.join(root, "root"), 0o700)
    write(os.path.join(root, "etc/passwd"), "root:x:0:0:root:/root:/sbin/nologin\n")
    write(os.path.join(root, "etc/group"), "root:x:0:\n")
    certs = os.path.join(root, "etc/ssl/certs/ca-certificates.crt")
    shutil.copyfile(args.certs, certs)
    os.chmod(certs, 0o644)


# ---------------------------------------------------------------------------------------
# gpu-libs


def find_wheel(wheels, prefix):
    found = sorted(w for w in os.listdir(wheels) if w.startswith(prefix) and w.endswith(".whl"))
    if len(found) != 1:
        sys.exit(f"error: expected one {prefix}*.whl in {wheels}, found {found or 'none'}")
    return os.path.join(wheels, found[0])


def extract_wheel_libs(root, wheels):
    for prefix, member_dir, dest, patterns in GPU_WHEEL_FILES:
        wheel = find_wheel(wheels, prefix)
        with zipfile.ZipFile(wheel) as z:
            names = [n for n in z.namelist()
                     if n.startswith(member_dir) and "/" not in n[len(member_dir):]]
            for pattern in patterns:
                matched = [n for n in names if fnmatch.fnmatch(n[len(member_dir):], pattern)]
                if not matched:
                    sys.exit(f"error: {os.path.basename(wheel)} has no {member_dir}{pattern}")
                for name in matched:
                    out = inside(root, os.path.join(dest, name[len(member_dir):]))
                    os.makedirs(os.path.dirname(out), exist_ok=True)
                    with z.open(name) as src, open(out, "wb") as dst:
                        shutil.copyfileobj(src, dst, 1 << 20)
                    os.chmod(out, 0o755)


def host_library(name):
    """This machine's copy of the library `name` (its real file), or None."""
    for d in SYSTEM_DIRS + ["/lib64", "/usr/lib64"]:
        path = os.path.join(d, name)
        if os.path.isfile(path):
            return os.path.realpath(path)
    return None


def cmd_gpu_libs(args):
    ort_root, cuda_root, glibc_root = (os.path.join(args.dir, t)
                                       for t in ("onnxruntime", "cuda", "glibc"))
    for tree in (ort_root, cuda_root, glibc_root):
        if os.path.lexists(tree):
            shutil.rmtree(tree)
    # ONNX Runtime and CUDA from the wheels, each tree its own layer.
    extract_wheel_libs(ort_root, args.wheels)
    os.makedirs(os.path.join(cuda_root, "opt"))
    shutil.move(inside(ort_root, "/opt/nvidia"), os.path.join(cuda_root, "opt", "nvidia"))
    ort_dir = inside(ort_root, ORT_DIR)
    (ort,) = [f for f in os.listdir(ort_dir) if f.startswith("libonnxruntime.so.1.")]
    for link in ("libonnxruntime.so.1", "libonnxruntime.so"):
        os.symlink(ort, os.path.join(ort_dir, link))

    # The C/C++ runtime: the closure under DT_NEEDED of flash-host and every library above,
    # less what the wheels provide and the driver, from this machine's system directories.
    interp = Elf(args.flash_host).interp
    if interp is None or os.path.basename(interp) != LOADER:
        sys.exit(f"error: {args.flash_host} is not a glibc x86-64 executable "
                 f"(interpreter: {interp})")
    provided, elves = set(), [args.flash_host]
    for tree in (ort_root, cuda_root):
        for dirpath, _dirs, files in os.walk(tree):
            for f in files:
                provided.add(f)
                if is_elf(os.path.join(dirpath, f)):
                    elves.append(os.path.join(dirpath, f))
    glibc_dir = inside(glibc_root, LIBDIR)
    os.makedirs(glibc_dir)
    copied, todo = {}, [LOADER]
    while elves or todo:
        if elves:
            todo += Elf(elves.pop()).needed
            continue
        name = todo.pop()
        if name in provided or name in copied or name in DRIVER_LIBS:
            continue
        src = host_library(name)
        if src is None:
            sys.exit(f"error: {name} is needed but not on this machine ({', '.join(SYSTEM_DIRS)})")
        dst = os.path.join(glibc_dir, name)
        shutil.copyfile(src, dst)
        os.chmod(dst, 0o755)
        copied[name] = src
        elves.append(dst)
    os.makedirs(os.path.join(glibc_root, "lib64"))
    os.symlink(f"..{LIBDIR}/{LOADER}", os.path.join(glibc_root, "lib64", LOADER))
    os.symlink("usr/lib", os.path.join(glibc_root, "lib"))
    for name in sorted(copied):
        print(f"  {LIBDIR}/{name}  <- {copied[name]}")


# ---------------------------------------------------------------------------------------
# check


def cmd_check(args):
    root = os.path.abspath(args.dir)
    inspect = json.load(sys.stdin)
    config = (inspect.get("OCIv1") or {}).get("config") or {}
    env = dict(kv.partition("=")[::2] for kv in config.get("Env") or [])
    entrypoint = config.get("Entrypoint") or []
    if not entrypoint:
        sys.exit("error: the image has no entrypoint")
    entry = real_in_root(root, entrypoint[0])
    if entry is None or not os.path.isfile(inside(root, entry)):
        sys.exit(f"error: the entrypoint {entrypoint[0]} is not a file in {root}")
    problems = []
    if not os.stat(inside(root, entry)).st_mode & stat.S_IXUSR:
        problems.append(f"the entrypoint {entry} is not executable")
    for d in ["/app", "/root/.runpod", "/tmp"]:
        if not os.path.isdir(inside(root, d)):
            problems.append(f"{d} is missing")
    if not os.path.isfile(inside(root, "/etc/ssl/certs/ca-certificates.crt")):
        problems.append("/etc/ssl/certs/ca-certificates.crt is missing")
    elf = Elf(inside(root, entry))
    if args.variant == "cpu":
        if elf.is_static:
            print(f"  {entry}: a static executable (no interpreter, no shared libraries)")
        else:
            problems.append(f"the entrypoint {entry} is not static: interpreter {elf.interp}, "
                            f"libraries {elf.needed}")
    else:
        search = [d for d in env.get("LD_LIBRARY_PATH", "").split(":") if d] + SYSTEM_DIRS
        if elf.interp is None or real_in_root(root, elf.interp) is None:
            problems.append(f"the entrypoint's interpreter {elf.interp} is not in the image")
        ort = env.get("ORT_DYLIB_PATH")
        if not ort or real_in_root(root, ort) is None:
            problems.append(f"ORT_DYLIB_PATH={ort} is not in the image")
        elves = sorted(os.path.join(d, f) for d, _, files in os.walk(root) for f in files
                       if not os.path.islink(os.path.join(d, f)) and is_elf(os.path.join(d, f)))
        for path in elves:
            image_path = "/" + os.path.relpath(path, root)
            e = Elf(path)
            dirs = [d.replace("$ORIGIN", os.path.dirname(image_path)) for d in e.runpath] + search
            for name in e.needed:
                if name not in DRIVER_LIBS and resolve_in_root(root, name, dirs) is None:
                    problems.append(f"{image_path} needs {name}, which is not in the image")
        if not problems:
            print(f"  {len(elves)} ELF files: every DT_NEEDED library resolves inside the image")
            problems += loader_checks(root, elf, entry, search, elves)
    if problems:
        print("error: the root filesystem is not right:", file=sys.stderr)
        for p in problems:
            print(f"  - {p}", file=sys.stderr)
        sys.exit(1)


def loader_checks(root, elf, entry, search, elves):
    """Binds every ELF file with the image's own loader and libraries (none of this
    machine's) and runs the entrypoint's `--version`. Returns the problems."""
    problems = []
    loader = inside(root, real_in_root(root, elf.interp))
    # The loader's built-in system directories are this machine's: the image's come first,
    # and a library found anywhere else is a problem.
    library_path = ":".join(inside(root, d) for d in search)
    env = {"PATH": "/usr/bin:/bin", "LD_BIND_NOW": "1", "LD_WARN": "1"}
    for path in elves:
        if os.path.basename(path) == LOADER:
            continue
        out = subprocess.run([loader, "--library-path", library_path, "--list", path],
                             env=env, capture_output=True, text=True)
        for line in (out.stdout + out.stderr).splitlines():
            line = line.strip()
            if "not found" in line or "undefined symbol" in line:
                if not any(d in line for d in DRIVER_LIBS):
                    problems.append(f"{os.path.relpath(path, root)}: {line}")
            elif "=>" in line:
                target = line.split("=>", 1)[1].strip().split(" (")[0]
                if target and not target.startswith(root + "/"):
                    problems.append(f"{os.path.relpath(path, root)}: {line} (outside the image)")
    out = subprocess.run([loader, "--library-path", library_path, inside(root, entry),
                          "--version"], env={"PATH": "/usr/bin:/bin"}, capture_output=True,
                         text=True)
    if out.returncode != 0:
        problems.append(f"{entry} --version failed: {out.stderr.strip()}")
    elif not problems:
        print(f"  the image's loader binds every library with the image's libraries only; "
              f"{entry} --version: {out.stdout.strip()}")
    return problems


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("base")
    p.add_argument("dir")
    p.add_argument("--certs", required=True)
    p.set_defaults(func=cmd_base)
    p = sub.add_parser("gpu-libs")
    p.add_argument("dir")
    p.add_argument("--wheels", required=True)
    p.add_argument("--flash-host", required=True)
    p.set_defaults(func=cmd_gpu_libs)
    p = sub.add_parser("check")
    p.add_argument("dir")
    p.add_argument("--variant", choices=["cpu", "gpu"], required=True)
    p.set_defaults(func=cmd_check)
    args = parser.parse_args()
    args.func(args)


if __name__ == "__main__":
    main()
