// bench/transfer/channel_bench.cc: the secure channel alone, no disk, no
// agent (built and run by bench/transfer/run.sh, not by ctest).
//
// Prints tab-separated lines:
//   sodium  <op> <bytes> <GB/s>        raw libsodium ChaCha20-Poly1305-IETF on one core, and
//                                      XChaCha20-Poly1305 on 1 MiB exactly as
//                                      ../shared/peers/transfer_bench.sh measures it
//   channel mem_one_core <bytes> <GB/s> <ratio to raw seal+open on one core>
//   channel tcp_two_threads <bytes> <GB/s> <ratio to raw encrypt on one core> ... vs_xchacha_1MiB <ratio>
//   setup   <n> <median ms> <p90 ms> <min ms>   TCP connect + full handshake over 127.0.0.1
//
// mem_one_core: one thread seals (SecureChannel::send + poll_transmit) and
// opens (on_bytes + poll_message) every message, so its ceiling is one core's
// seal+open rate. tcp_two_threads: the sender and the receiver each on their
// own thread (own core), bytes through a loopback TCP socket: the channel's
// real one-direction throughput, compared with one core's encrypt rate. Both
// ends drive the channel as the agent does (node/agent/transfer_net.cc): the
// receiver reads the socket straight into receive_space() and takes messages
// with peek_message() (no copy), the sender hands written buffers back with
// recycle_transmit(). The line also gives each thread's CPU share and the
// rate per CPU-second of the busier end ("per_cpu", compared with raw encrypt
// per CPU-second of one thread), which is what the rate would be if that end
// had a core to itself: on a shared 2-core machine the wall-clock rate mostly
// measures the other tenants.

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sodium.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <thread>
#include <vector>

#include "base/crypto.h"
#include "base/random.h"
#include "transfer/secure_channel.h"

using namespace shoal;
using namespace shoal::transfer;

namespace {

double now_s() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}
Instant now_i() {
  return instant_from_us(std::chrono::duration_cast<std::chrono::microseconds>(
                             std::chrono::steady_clock::now().time_since_epoch())
                             .count());
}

struct Keys {
  Prng rng{7};
  Identity a = Identity::generate(rng);
  Identity b = Identity::generate(rng);
  ClusterKey cluster = generate_cluster_key(rng);
  ChannelConfig initiator() const {
    ChannelConfig c;
    c.role = ChannelRole::kInitiator;
    c.keyring = Keyring(cluster);
    c.expected_peer_key = b.public_key();
    return c;
  }
  ChannelConfig responder() const {
    ChannelConfig c;
    c.role = ChannelRole::kResponder;
    c.keyring = Keyring(cluster);
    const PublicKey expected = a.public_key();
    c.authorize_peer = [expected](const NodeId&, const PublicKey& key) -> Status {
      if (key != expected) return make_error(Code::kPermissionDenied, "unknown");
      return {};
    };
    return c;
  }
};

double thread_cpu_s();

// Bytes per CPU-second of the calling thread: what one core does when it has
// the core to itself, whatever else the machine runs meanwhile.
template <typename F>
double cpu_rate(F&& f, std::size_t bytes_per_call) {
  f();
  long it = 0;
  const double c0 = thread_cpu_s();
  const double t0 = now_s();
  while (now_s() - t0 < 1.0) {
    f();
    ++it;
  }
  return static_cast<double>(it) * static_cast<double>(bytes_per_call) / (thread_cpu_s() - c0) / 1e9;
}

template <typename F>
double best_rate(F&& f, std::size_t bytes_per_call) {
  double best = 0;
  for (int r = 0; r < 3; ++r) {
    f();
    long it = 0;
    const double t0 = now_s();
    double t = 0;
    do {
      f();
      ++it;
      t = now_s() - t0;
    } while (t < 0.4);
    best = std::max(best, static_cast<double>(it) * static_cast<double>(bytes_per_call) / t / 1e9);
  }
  return best;
}

void pump(SecureChannel& x, SecureChannel& y, Instant now) {
  for (int i = 0; i < 16; ++i) {
    bool moved = false;
    while (auto tx = x.poll_transmit()) {
      y.on_bytes(now, *tx);
      moved = true;
    }
    while (auto tx = y.poll_transmit()) {
      x.on_bytes(now, *tx);
      moved = true;
    }
    if (!moved) return;
  }
}

double thread_cpu_s() {
  rusage u{};
  ::getrusage(RUSAGE_THREAD, &u);
  return static_cast<double>(u.ru_utime.tv_sec + u.ru_stime.tv_sec) +
         static_cast<double>(u.ru_utime.tv_usec + u.ru_stime.tv_usec) / 1e6;
}

bool write_all(int fd, const std::uint8_t* p, std::size_t n) {
  while (n > 0) {
    const ssize_t w = ::write(fd, p, n);
    if (w <= 0) return false;
    p += w;
    n -= static_cast<std::size_t>(w);
  }
  return true;
}

int listen_any(std::uint16_t& port) {
  const int s = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  a.sin_port = 0;
  if (::bind(s, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0 || ::listen(s, 64) != 0) {
    std::perror("bind/listen");
    std::exit(1);
  }
  socklen_t len = sizeof a;
  ::getsockname(s, reinterpret_cast<sockaddr*>(&a), &len);
  port = ntohs(a.sin_port);
  return s;
}

int dial(std::uint16_t port) {
  const int s = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  a.sin_port = htons(port);
  if (::connect(s, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) {
    std::perror("connect");
    std::exit(1);
  }
  const int one = 1;
  ::setsockopt(s, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  return s;
}

// Drives a channel on a blocking socket until `done` says so, reading into
// the channel's own buffer (read_bytes at a time) as the agent does.
template <typename Done>
bool drive(SecureChannel& c, int fd, std::size_t read_bytes, Done&& done) {
  for (;;) {
    const bool finished = done();
    while (auto tx = c.poll_transmit()) {
      if (!write_all(fd, tx->data(), tx->size())) return false;
      c.recycle_transmit(std::move(*tx));
    }
    if (finished) return true;
    if (c.state() == ChannelState::kFailed) return false;
    const std::span<std::uint8_t> space = c.receive_space(read_bytes);
    const ssize_t n = ::read(fd, space.data(), std::min(space.size(), read_bytes));
    if (n <= 0) return false;
    c.on_received(now_i(), static_cast<std::size_t>(n));
  }
}

}  // namespace

int main(int argc, char** argv) {
  crypto_init();
  const std::size_t msg = kMessageBytesMax;  // The largest frame the channel carries.
  const double tcp_seconds = argc > 1 ? std::atof(argv[1]) : 3.0;
  const int setups = argc > 2 ? std::atoi(argv[2]) : 200;
  Keys keys;

  // ---- raw libsodium, one core
  std::vector<std::uint8_t> in(msg), out(msg + 16), ct(msg + 16);
  randombytes_buf(in.data(), in.size());
  std::uint8_t key[32], nonce[12] = {};
  randombytes_buf(key, sizeof key);
  unsigned long long ctlen = 0;
  crypto_aead_chacha20poly1305_ietf_encrypt(ct.data(), &ctlen, in.data(), msg, nullptr, 0, nullptr, nonce, key);
  const double enc = best_rate(
      [&] {
        unsigned long long l;
        crypto_aead_chacha20poly1305_ietf_encrypt(out.data(), &l, in.data(), msg, nullptr, 0, nullptr, nonce, key);
      },
      msg);
  const double dec = best_rate(
      [&] {
        unsigned long long l;
        if (crypto_aead_chacha20poly1305_ietf_decrypt(out.data(), &l, nullptr, ct.data(), ctlen, nullptr, 0, nonce,
                                                      key) != 0)
          std::abort();
      },
      msg);
  const double seal_open = 1.0 / (1.0 / enc + 1.0 / dec);
  const double enc_cpu = cpu_rate(
      [&] {
        unsigned long long l;
        crypto_aead_chacha20poly1305_ietf_encrypt(out.data(), &l, in.data(), msg, nullptr, 0, nullptr, nonce, key);
      },
      msg);
  std::printf("sodium\tchacha20poly1305_ietf_encrypt\t%zu\t%.3f\n", msg, enc);
  std::printf("sodium\tchacha20poly1305_ietf_decrypt\t%zu\t%.3f\n", msg, dec);
  std::printf("sodium\tseal_plus_open_one_core\t%zu\t%.3f\n", msg, seal_open);
  std::printf("sodium\tchacha20poly1305_ietf_encrypt_per_cpu_second\t%zu\t%.3f\n", msg, enc_cpu);
  // The peers' reference figure ("XChaCha20-Poly1305 about 1.35 GB/s"): the
  // same call, buffer size and timing as ../shared/peers/transfer_bench.sh.
  double xenc = 0;
  {
    const std::size_t n = std::size_t{1} << 20;
    std::vector<std::uint8_t> xin(n + 64), xout(n + 64);
    randombytes_buf(xin.data(), n);
    std::uint8_t n24[24];
    randombytes_buf(n24, sizeof n24);
    xenc = best_rate(
        [&] {
          unsigned long long l;
          crypto_aead_xchacha20poly1305_ietf_encrypt(xout.data(), &l, xin.data(), n, nullptr, 0, nullptr, n24, key);
        },
        n);
    std::printf("sodium\txchacha20poly1305_ietf_encrypt\t%zu\t%.3f\n", n, xenc);
  }
  std::fflush(stdout);

  // ---- channel in memory, one core does both ends
  {
    Prng ra(1), rb(2);
    const Instant t = now_i();
    SecureChannel a(keys.initiator(), keys.a, ra, t);
    SecureChannel b(keys.responder(), keys.b, rb, t);
    pump(a, b, t);
    if (!a.established() || !b.established()) {
      std::fprintf(stderr, "handshake failed\n");
      return 1;
    }
    const ByteView m(in.data(), msg);
    const double rate = best_rate(
        [&] {
          if (!a.send(t, m)) std::abort();
          while (auto tx = a.poll_transmit()) b.on_bytes(t, *tx);
          auto got = b.poll_message();
          if (!got || got->size() != msg) std::abort();
        },
        msg);
    std::printf("channel\tmem_one_core\t%zu\t%.3f\t%.2f\n", msg, rate, rate / seal_open);
    std::fflush(stdout);
  }

  // ---- channel over loopback TCP, sender and receiver on their own threads
  {
    std::uint16_t port = 0;
    const int ls = listen_any(port);
    std::atomic<std::uint64_t> received{0};
    std::atomic<bool> stop{false};
    double t_first = 0, t_last = 0, rx_cpu = 0;
    std::thread rx([&] {
      const double cpu0 = thread_cpu_s();
      const int fd = ::accept(ls, nullptr, nullptr);
      Prng rb(2);
      SecureChannel b(keys.responder(), keys.b, rb, now_i());
      std::uint64_t got = 0;
      drive(b, fd, std::size_t{1} << 20, [&] {
        while (auto m = b.peek_message()) {
          if (got == 0) t_first = now_s();
          got += m->size();
          b.pop_message();
        }
        if (b.peer_closed()) {
          t_last = now_s();
          return true;
        }
        return false;
      });
      received = got;
      rx_cpu = thread_cpu_s() - cpu0;
      ::close(fd);
    });
    const int fd = dial(port);
    Prng ra(1);
    SecureChannel a(keys.initiator(), keys.a, ra, now_i());
    if (!drive(a, fd, std::size_t{1} << 16, [&] { return a.established(); })) {
      std::fprintf(stderr, "tcp handshake failed\n");
      return 1;
    }
    const ByteView m(in.data(), msg);
    const double t0 = now_s();
    const double tx_cpu0 = thread_cpu_s();
    std::uint64_t sent = 0;
    while (now_s() - t0 < tcp_seconds) {
      for (int i = 0; i < 8; ++i) {
        if (!a.send(now_i(), m)) std::abort();
        sent += msg;
      }
      while (auto tx = a.poll_transmit()) {
        if (!write_all(fd, tx->data(), tx->size())) std::abort();
        a.recycle_transmit(std::move(*tx));
      }
    }
    a.close(now_i());
    while (auto tx = a.poll_transmit()) write_all(fd, tx->data(), tx->size());
    const double tx_cpu = thread_cpu_s() - tx_cpu0;
    const double tx_wall = now_s() - t0;
    ::shutdown(fd, SHUT_WR);
    rx.join();
    ::close(fd);
    ::close(ls);
    stop = true;
    const double rate = static_cast<double>(received.load()) / (t_last - t_first) / 1e9;
    const double busiest = std::max(tx_cpu / tx_wall, rx_cpu / (t_last - t_first));
    std::printf("channel\ttcp_two_threads\t%zu\t%.3f\t%.2f\tsender_cpu_share\t%.2f\treceiver_cpu_share\t%.2f"
                "\tper_cpu\t%.3f\t%.2f\tvs_xchacha_1MiB\t%.2f\n",
                msg, rate, rate / enc, tx_cpu / tx_wall, rx_cpu / (t_last - t_first), rate / busiest,
                rate / busiest / enc_cpu, rate / xenc);
    std::fflush(stdout);
    (void)sent;
  }

  // ---- authenticated connection setup: connect() to both ends established and
  // a first message from the responder seen by the initiator (1.5 round trips).
  {
    std::uint16_t port = 0;
    const int ls = listen_any(port);
    std::thread srv([&] {
      for (int i = 0; i < setups; ++i) {
        const int fd = ::accept(ls, nullptr, nullptr);
        const int one = 1;
        ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        SystemRandom rb;
        SecureChannel b(keys.responder(), keys.b, rb, now_i());
        bool said = false;
        drive(b, fd, 4096, [&] {
          if (b.established() && !said) {
            const std::uint8_t hi = 1;
            (void)b.send(now_i(), ByteView(&hi, 1));
            said = true;
            return false;  // Flush it, then wait for the peer to hang up.
          }
          return false;
        });
        ::close(fd);
      }
    });
    std::vector<double> ms;
    for (int i = 0; i < setups; ++i) {
      const double t0 = now_s();
      const int fd = dial(port);
      SystemRandom ra;
      SecureChannel a(keys.initiator(), keys.a, ra, now_i());
      bool ok = drive(a, fd, 4096, [&] { return a.established() && a.poll_message().has_value(); });
      const double t1 = now_s();
      ::close(fd);
      if (!ok) {
        std::fprintf(stderr, "setup %d failed\n", i);
        return 1;
      }
      ms.push_back((t1 - t0) * 1e3);
    }
    srv.join();
    ::close(ls);
    std::sort(ms.begin(), ms.end());
    std::printf("setup\t%d\t%.3f\t%.3f\t%.3f\n", setups, ms[ms.size() / 2], ms[ms.size() * 9 / 10], ms.front());
  }
  return 0;
}
