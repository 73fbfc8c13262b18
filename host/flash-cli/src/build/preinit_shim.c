/*
 * Deterministic pre-initialisation for componentize-py (Linux, x86_64).
 *
 * `flash build` loads this library into the componentize-py process with LD_PRELOAD (as
 * Debian's reproducible-builds work runs builds under faketime). componentize-py
 * pre-initialises CPython inside its embedded wasmtime and snapshots the heap into the
 * component; whatever the host hands the guest through WASI during that run ends up in
 * the snapshot, directly or as leftovers in freed memory. Measured (docs/python-sdk.md,
 * "Reproducible builds"), four inputs differ between two builds of the same sources:
 *
 *   - random bytes (`getrandom`): CPython's hash secret, the `random` module's seed,
 *     Rust's HashMap keys. Here every thread gets its own stream, derived from
 *     FLASH_PREINIT_SEED (a digest of the build's inputs) and the number of requests that
 *     thread made before.
 *   - clocks (`clock_gettime`): the wall clock reads 1980-01-01 on every thread. The
 *     monotonic clocks read 1 s on the process's main thread, where componentize-py runs
 *     the guest (tokio's `block_on`), and the real time on the other threads: those drive
 *     tokio's timers, so a guest that sleeps while it is imported wakes at once instead
 *     of waiting for a frozen clock forever.
 *   - file times and identities (`statx`): access, birth, change and modification times
 *     read 1980-01-01 (the time `flash build` already gives every staged file), and every
 *     file has the same device and inode number (wasmtime hashes them into the inode
 *     numbers the guest sees).
 *
 * wasmtime's file system code calls `statx` with raw system calls (rustix), past any
 * symbol LD_PRELOAD can replace, so `statx` and `getrandom` are caught with a seccomp
 * filter instead: the kernel turns every such call not made from `flash_preinit_syscall`
 * below into SIGSYS, and the handler answers it. `clock_gettime` is answered by the
 * vDSO without a system call, so that one is replaced as a symbol.
 *
 * The constructor writes "ok" to the file named by FLASH_PREINIT_STAMP once the filter is
 * in place, or "error: <why>" when it could not be, so that `flash build` knows whether
 * the component it built is reproducible.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/audit.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <signal.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <time.h>
#include <ucontext.h>
#include <unistd.h>

#if !defined(__x86_64__)
#error "the pre-initialisation shim supports x86_64 only"
#endif

/* 1980-01-01T00:00:00Z: FIXED_MTIME in python.rs. */
#define FIXED_TIME 315532800

#define THREAD_LOCAL __thread __attribute__((tls_model("initial-exec")))

/* splitmix64 */
static uint64_t mix(uint64_t x) {
    x += 0x9e3779b97f4a7c15ull;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
    return x ^ (x >> 31);
}

static uint64_t seed = 0x666c617368ull; /* FLASH_PREINIT_SEED folded in by the constructor */
static THREAD_LOCAL uint64_t random_requests;

static void deterministic_bytes(unsigned char *buf, size_t len) {
    uint64_t state = mix(seed ^ mix(++random_requests));
    for (size_t i = 0; i < len; i += 8) {
        uint64_t word = mix(state += 0x9e3779b97f4a7c15ull);
        size_t n = len - i < 8 ? len - i : 8;
        memcpy(buf + i, &word, n);
    }
}

static void fixed_statx(struct statx *sx) {
    struct statx_timestamp *times[] = {&sx->stx_atime, &sx->stx_btime, &sx->stx_ctime,
                                       &sx->stx_mtime};
    for (size_t i = 0; i < sizeof times / sizeof times[0]; i++) {
        times[i]->tv_sec = FIXED_TIME;
        times[i]->tv_nsec = 0;
    }
    sx->stx_ino = 1;
    sx->stx_dev_major = 0;
    sx->stx_dev_minor = 1;
}

/*
 * The one place `statx` and `getrandom` may be called from: the seccomp filter lets a
 * system call through when it returns to `flash_preinit_syscall_end`.
 * long flash_preinit_syscall(long nr, long a1, long a2, long a3, long a4, long a5, long a6)
 */
__attribute__((visibility("hidden"))) long flash_preinit_syscall(long, long, long, long, long, long, long);
__attribute__((visibility("hidden"))) extern const char flash_preinit_syscall_end[];
__asm__(".text\n"
        ".globl flash_preinit_syscall\n"
        ".hidden flash_preinit_syscall\n"
        ".type flash_preinit_syscall, @function\n"
        "flash_preinit_syscall:\n"
        "    mov %rdi, %rax\n"
        "    mov %rsi, %rdi\n"
        "    mov %rdx, %rsi\n"
        "    mov %rcx, %rdx\n"
        "    mov %r8, %r10\n"
        "    mov %r9, %r8\n"
        "    mov 8(%rsp), %r9\n"
        "    syscall\n"
        ".globl flash_preinit_syscall_end\n"
        ".hidden flash_preinit_syscall_end\n"
        "flash_preinit_syscall_end:\n"
        "    ret\n"
        ".size flash_preinit_syscall, . - flash_preinit_syscall\n");

static void on_sigsys(int sig, siginfo_t *info, void *context) {
    (void)sig;
    greg_t *regs = ((ucontext_t *)context)->uc_mcontext.gregs;
    long nr = info->si_syscall;
    long a1 = regs[REG_RDI], a2 = regs[REG_RSI], a3 = regs[REG_RDX];
    long a4 = regs[REG_R10], a5 = regs[REG_R8], a6 = regs[REG_R9];
    long result;
    if (nr == SYS_getrandom) {
        deterministic_bytes((unsigned char *)a1, (size_t)a2);
        result = a2;
    } else {
        result = flash_preinit_syscall(nr, a1, a2, a3, a4, a5, a6);
        if (nr == SYS_statx && result == 0) {
            fixed_statx((struct statx *)a5);
        }
    }
    regs[REG_RAX] = result;
}

static THREAD_LOCAL int thread_kind; /* 0: not known yet, 1: main thread, 2: another */

int clock_gettime(clockid_t clock, struct timespec *ts) {
    switch (clock) {
    case CLOCK_REALTIME:
    case CLOCK_REALTIME_COARSE:
        ts->tv_sec = FIXED_TIME;
        ts->tv_nsec = 0;
        return 0;
    case CLOCK_MONOTONIC:
    case CLOCK_MONOTONIC_COARSE:
    case CLOCK_MONOTONIC_RAW:
    case CLOCK_BOOTTIME:
        if (thread_kind == 0) {
            thread_kind = syscall(SYS_gettid) == getpid() ? 1 : 2;
        }
        if (thread_kind == 1) {
            ts->tv_sec = 1;
            ts->tv_nsec = 0;
            return 0;
        }
        break;
    default:
        break;
    }
    return (int)syscall(SYS_clock_gettime, clock, ts);
}

static void report(const char *stamp, const char *what, int error) {
    if (stamp == NULL || *stamp == '\0') {
        return;
    }
    int fd = open(stamp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) {
        return;
    }
    ssize_t ignored = write(fd, what, strlen(what));
    if (error != 0) {
        const char *text = strerror(error);
        ignored = write(fd, ": ", 2);
        ignored = write(fd, text, strlen(text));
    }
    ignored = write(fd, "\n", 1);
    (void)ignored;
    close(fd);
}

__attribute__((constructor)) static void flash_preinit_start(void) {
    /*
     * A filter survives exec, its handler does not: in a program started by a process that
     * has this library loaded, a trapped call kills the program with SIGSYS (`flash build`
     * then says what happened). Make that happen here, before this program installs a
     * handler whose own calls the inherited filter would trap again and again.
     */
    unsigned char probe;
    (void)flash_preinit_syscall(SYS_getrandom, (long)&probe, 1, 1 /* GRND_NONBLOCK */, 0, 0, 0);

    const char *stamp = getenv("FLASH_PREINIT_STAMP");
    const char *hex = getenv("FLASH_PREINIT_SEED");
    for (; hex != NULL && *hex != '\0'; hex++) {
        seed = mix(seed ^ (unsigned char)*hex);
    }

    struct sigaction action;
    memset(&action, 0, sizeof action);
    action.sa_sigaction = on_sigsys;
    action.sa_flags = SA_SIGINFO;
    sigemptyset(&action.sa_mask);
    if (sigaction(SIGSYS, &action, NULL) != 0) {
        report(stamp, "error: installing the SIGSYS handler", errno);
        return;
    }

    uint64_t allowed = (uint64_t)(uintptr_t)flash_preinit_syscall_end;
    struct sock_filter filter[] = {
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, arch)),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, AUDIT_ARCH_X86_64, 1, 0),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, SYS_statx, 2, 0),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, SYS_getrandom, 1, 0),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
        /* statx or getrandom: allowed from flash_preinit_syscall only */
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, instruction_pointer)),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, (uint32_t)allowed, 0, 3),
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS,
                 offsetof(struct seccomp_data, instruction_pointer) + sizeof(uint32_t)),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, (uint32_t)(allowed >> 32), 0, 1),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_TRAP),
    };
    struct sock_fprog program = {
        .len = (unsigned short)(sizeof filter / sizeof filter[0]),
        .filter = filter,
    };
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0) {
        report(stamp, "error: prctl(PR_SET_NO_NEW_PRIVS)", errno);
        return;
    }
    /* TSYNC: threads started before this constructor (none, normally) get it too. */
    if (syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, SECCOMP_FILTER_FLAG_TSYNC, &program) != 0) {
        report(stamp, "error: installing the seccomp filter", errno);
        return;
    }
    report(stamp, "ok", 0);
}
