// HardwareCRC32C: CRC-32C (Castagnoli) with the CPU's own instruction, for EventStoreKV's page and WAL checksums
// (Sources/EventStoreKV/PageFile/CRC32C.swift). Swift cannot reach the instruction without compiler flags that
// would make the whole package require it, so this small C target compiles only its checksum function for it
// and checks the CPU at run time. It uses nothing beyond the compiler's own headers.

#ifndef EVENTSTORE_HARDWARE_CRC32C_H
#define EVENTSTORE_HARDWARE_CRC32C_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/// Whether this CPU has the CRC-32C instruction (SSE4.2 on x86-64). Always false on other architectures.
bool eventstore_crc32c_hardware_available(void);

/// The CRC-32C of `count` bytes at `bytes`, continuing from `seed` (0 to start fresh): equal to the standard
/// CRC-32C (RFC 3720) when `seed` is 0. Call only when `eventstore_crc32c_hardware_available()` is true.
uint32_t eventstore_crc32c_hardware(uint32_t seed, const void *_Nonnull bytes, size_t count);

#endif
