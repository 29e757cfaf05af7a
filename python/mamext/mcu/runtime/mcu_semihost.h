/*
 * ARM semihosting, the debug channel QEMU serves on the host: the firmware
 * opens, reads and writes host files and exits with a status code through
 * it. Only the calls the firmware uses; each takes a parameter block of
 * words and returns r0 (see the ARM "Semihosting for AArch32 and AArch64"
 * specification, version 2).
 */
#ifndef MCU_SEMIHOST_H
#define MCU_SEMIHOST_H

#include <stdint.h>

/* File modes of SYS_OPEN: binary read and binary write (create/truncate). */
#define MCU_SH_MODE_RB 1
#define MCU_SH_MODE_WB 5

/* Opens a host file (path relative to the emulator's working directory; length bytes, no terminator
 * counted, but path must end with one); a handle, or -1. */
int32_t mcu_sh_open(const char *path, uint32_t length, int32_t mode);

/* Reads up to len bytes; returns the number of bytes read (0 at end of file, -1 on error). */
int32_t mcu_sh_read(int32_t handle, void *buf, uint32_t len);

/* Writes len bytes; returns 0 when all were written, -1 otherwise. */
int32_t mcu_sh_write(int32_t handle, const void *buf, uint32_t len);

/* Closes a handle; returns 0 on success. */
int32_t mcu_sh_close(int32_t handle);

/* Ends the emulation; the emulator exits with `code`. */
void mcu_sh_exit(int32_t code) __attribute__((noreturn));

#endif /* MCU_SEMIHOST_H */
