/* What the startup code offers the firmware's main: the stack high-water mark. */
#ifndef MCU_STARTUP_H
#define MCU_STARTUP_H

#include <stdint.h>

/* Deepest stack use since reset, in bytes (the reset handler paints the stack; this finds the paint's end). */
uint32_t mcu_stack_high_water(void);

/* Size of the stack region the linker script reserves, in bytes. */
uint32_t mcu_stack_size(void);

#endif /* MCU_STARTUP_H */
