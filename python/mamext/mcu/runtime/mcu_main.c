/*
 * main of the mamext firmware: runs the exported network on every sample of
 * a host file, through semihosting, and times each inference with SysTick.
 *
 * mcu_config.h (written per build) includes the network's header and names
 * MCU_INPUT_T, MCU_OUTPUT_T (element types), MCU_INPUT_SIZE,
 * MCU_OUTPUT_SIZE (elements per sample) and MCU_INFER (the network's entry
 * point, void MCU_INFER(const MCU_INPUT_T *, MCU_OUTPUT_T *)).
 *
 * Files, in the emulator's working directory, all little-endian:
 *   mcu_in.bin     uint32 max_repeats, then samples of MCU_INPUT_SIZE inputs;
 *   mcu_out.bin    MCU_OUTPUT_SIZE outputs per sample (written);
 *   mcu_stats.bin  per sample: uint32 repeats, ticks of `repeats` inferences,
 *                  ticks of `repeats` calls of an empty function of the same
 *                  signature; at the end: uint32 stack high-water mark and
 *                  stack size in bytes, and the ticks of CALIBRATION_LOOPS
 *                  iterations of a two-instruction loop (written), by which
 *                  the host checks how many instructions a tick lasts.
 * Each sample's outputs come from its first inference; the timed repeats run
 * afterwards on the same input. SysTick runs from the processor clock and
 * counts down 24 bits: repeats are capped so that one timing stays well
 * below a wrap-around.
 *
 * Exit status: 0 success, 2 a file cannot be opened, 3 a truncated sample or
 * header, 4 a write failed.
 */
#include <stdint.h>

#include "mcu_config.h"
#include "mcu_semihost.h"
#include "mcu_startup.h"

#define SYST_CSR (*(volatile uint32_t *)0xE000E010u)
#define SYST_RVR (*(volatile uint32_t *)0xE000E014u)
#define SYST_CVR (*(volatile uint32_t *)0xE000E018u)
#define SYSTICK_MASK 0xFFFFFFu
#define TIMING_TICKS_MAX 0x400000u /* a quarter of the 24-bit range */
#define CALIBRATION_LOOPS 100000u

#define IN_FILE "mcu_in.bin"
#define OUT_FILE "mcu_out.bin"
#define STATS_FILE "mcu_stats.bin"

#define EXIT_OPEN 2
#define EXIT_TRUNCATED 3
#define EXIT_WRITE 4

typedef void (*infer_fn)(const MCU_INPUT_T *input, MCU_OUTPUT_T *output);

static MCU_INPUT_T sample_in[MCU_INPUT_SIZE];
static MCU_OUTPUT_T sample_out[MCU_OUTPUT_SIZE];

/* The timing baseline: the call and loop overhead without any work (its body is one return). */
__attribute__((noinline)) static void empty_infer(const MCU_INPUT_T *input, MCU_OUTPUT_T *output)
{
    (void)input;
    (void)output;
    __asm__ volatile("" ::: "memory");
}

static void systick_start(void)
{
    SYST_CSR = 0;
    SYST_RVR = SYSTICK_MASK;
    SYST_CVR = 0;
    SYST_CSR = 5; /* enabled, processor clock, no interrupt */
}

/* SysTick ticks elapsed over `repeats` calls of fn (called through a pointer: the same code for every fn). */
__attribute__((noinline)) static uint32_t ticks_of(volatile infer_fn fn, uint32_t repeats)
{
    const uint32_t start = SYST_CVR;
    uint32_t r;
    for (r = 0; r < repeats; ++r) fn(sample_in, sample_out);
    return (start - SYST_CVR) & SYSTICK_MASK;
}

/* Ticks of exactly 2 * CALIBRATION_LOOPS instructions (subs, bne), give or take the two SysTick reads. */
__attribute__((noinline)) static uint32_t calibration_ticks(void)
{
    uint32_t loops = CALIBRATION_LOOPS;
    const uint32_t start = SYST_CVR;
    __asm__ volatile("1:\n\tsubs %0, %0, #1\n\tbne 1b" : "+r"(loops) : : "cc");
    return (start - SYST_CVR) & SYSTICK_MASK;
}

static int32_t read_full(int32_t handle, void *buf, uint32_t len)
{
    uint8_t *bytes = (uint8_t *)buf;
    uint32_t done = 0;
    while (done < len) {
        const int32_t n = mcu_sh_read(handle, bytes + done, len - done);
        if (n <= 0) break;
        done += (uint32_t)n;
    }
    return (int32_t)done;
}

/* Runs one sample: outputs, then the timing. Returns 0 or an exit status. */
static int run_sample(int32_t out, int32_t stats, uint32_t max_repeats)
{
    uint32_t record[3];
    uint32_t single, repeats;
    MCU_INFER(sample_in, sample_out);
    if (mcu_sh_write(out, sample_out, sizeof sample_out) != 0) return EXIT_WRITE;
    single = ticks_of(MCU_INFER, 1);
    repeats = TIMING_TICKS_MAX / (single + 1u);
    if (repeats > max_repeats) repeats = max_repeats;
    if (repeats < 1u) repeats = 1u;
    record[0] = repeats;
    record[1] = ticks_of(MCU_INFER, repeats);
    record[2] = ticks_of(empty_infer, repeats);
    return mcu_sh_write(stats, record, sizeof record) == 0 ? 0 : EXIT_WRITE;
}

int main(void)
{
    uint32_t max_repeats, trailer[3];
    int32_t got;
    int status = 0;
    const int32_t in = mcu_sh_open(IN_FILE, sizeof IN_FILE - 1, MCU_SH_MODE_RB);
    const int32_t out = mcu_sh_open(OUT_FILE, sizeof OUT_FILE - 1, MCU_SH_MODE_WB);
    const int32_t stats = mcu_sh_open(STATS_FILE, sizeof STATS_FILE - 1, MCU_SH_MODE_WB);
    if (in < 0 || out < 0 || stats < 0) return EXIT_OPEN;
    if (read_full(in, &max_repeats, sizeof max_repeats) != (int32_t)sizeof max_repeats) return EXIT_TRUNCATED;
    systick_start();
    while (status == 0) {
        got = read_full(in, sample_in, sizeof sample_in);
        if (got == 0) break;
        status = got == (int32_t)sizeof sample_in ? run_sample(out, stats, max_repeats) : EXIT_TRUNCATED;
    }
    trailer[0] = mcu_stack_high_water();
    trailer[1] = mcu_stack_size();
    trailer[2] = calibration_ticks();
    if (status == 0 && mcu_sh_write(stats, trailer, sizeof trailer) != 0) status = EXIT_WRITE;
    mcu_sh_close(in);
    mcu_sh_close(out);
    mcu_sh_close(stats);
    return status;
}
