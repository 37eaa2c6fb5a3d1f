// A C++ producer streaming into a channel that a Python process created.
//
//   python examples/python_consumer.py        (prints the command to run)
//   g++ -std=c++17 -O2 -I include examples/cpp_producer.cpp -o cpp_producer
//   ./cpp_producer CHANNEL_NAME COUNT
//
// Message i is 8 bytes of i (little-endian on x86/ARM) followed by i % 200
// bytes of the value i % 251; the consumer checks both.
#include "shmring.h"

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

int main(int argc, char **argv)
{
    if (argc != 3) {
        std::fprintf(stderr, "usage: %s CHANNEL_NAME COUNT\n", argv[0]);
        return 2;
    }
    const std::string name = std::string("/") + argv[1];
    const long count = std::strtol(argv[2], nullptr, 10);

    shmring_segment seg;
    int rc = shmring_segment_open(name.c_str(), 0, &seg);
    if (rc != SHMRING_OK) {
        std::fprintf(stderr, "open %s: %s\n", name.c_str(), shmring_strerror(rc));
        return 1;
    }
    shmring_channel ch;
    rc = shmring_channel_open_end(&ch, &seg, /*producer=*/1);
    if (rc != SHMRING_OK) {
        std::fprintf(stderr, "claim producer end: %s\n", shmring_strerror(rc));
        return 1;
    }
    std::vector<unsigned char> msg;
    for (long i = 0; i < count; i++) {
        const uint64_t seq = static_cast<uint64_t>(i);
        msg.assign(8 + static_cast<size_t>(i % 200), static_cast<unsigned char>(i % 251));
        std::memcpy(msg.data(), &seq, sizeof seq);
        const uint64_t deadline = shmring_now_ns() + UINT64_C(10000000000); // 10 s
        rc = shmring_channel_send(&ch, msg.data(), msg.size(), SHMRING_WAIT_ADAPTIVE, deadline);
        if (rc != SHMRING_OK) {
            std::fprintf(stderr, "send %ld: %s\n", i, shmring_strerror(rc));
            return 1;
        }
    }
    shmring_channel_close_end_of(&ch, /*producer=*/1); // end of stream
    shmring_segment_close(&seg);
    std::printf("sent %ld\n", count);
    return 0;
}
