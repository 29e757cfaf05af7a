/* ARM semihosting calls (see mcu_semihost.h): a BKPT 0xAB with the operation in r0, the block in r1. */
#include "mcu_semihost.h"

#define SYS_OPEN 0x01
#define SYS_CLOSE 0x02
#define SYS_WRITE 0x05
#define SYS_READ 0x06
#define SYS_EXIT_EXTENDED 0x20
#define ADP_STOPPED_APPLICATION_EXIT 0x20026

static int32_t semihost_call(int32_t operation, const void *block)
{
    register int32_t r0 __asm__("r0") = operation;
    register const void *r1 __asm__("r1") = block;
    __asm__ volatile("bkpt 0xab" : "+r"(r0) : "r"(r1) : "memory");
    return r0;
}

int32_t mcu_sh_open(const char *path, uint32_t length, int32_t mode)
{
    const uint32_t block[3] = {(uint32_t)path, (uint32_t)mode, length};
    return semihost_call(SYS_OPEN, block);
}

int32_t mcu_sh_read(int32_t handle, void *buf, uint32_t len)
{
    /* SYS_READ answers the number of bytes NOT read */
    const uint32_t block[3] = {(uint32_t)handle, (uint32_t)buf, len};
    const int32_t unread = semihost_call(SYS_READ, block);
    if (unread < 0 || (uint32_t)unread > len) return -1;
    return (int32_t)(len - (uint32_t)unread);
}

int32_t mcu_sh_write(int32_t handle, const void *buf, uint32_t len)
{
    /* SYS_WRITE answers the number of bytes NOT written */
    const uint32_t block[3] = {(uint32_t)handle, (uint32_t)buf, len};
    return semihost_call(SYS_WRITE, block) == 0 ? 0 : -1;
}

int32_t mcu_sh_close(int32_t handle)
{
    const uint32_t block[1] = {(uint32_t)handle};
    return semihost_call(SYS_CLOSE, block);
}

void mcu_sh_exit(int32_t code)
{
    const uint32_t block[2] = {ADP_STOPPED_APPLICATION_EXIT, (uint32_t)code};
    semihost_call(SYS_EXIT_EXTENDED, block);
    for (;;) {
    }
}
