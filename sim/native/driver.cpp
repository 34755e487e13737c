// Native driver of the Verilated ``post_engine``: replays a host job file at native speed.
//
// Verilator compiles this file with the engine's Verilog (``sim/native/__init__.py`` builds and runs
// it); no cocotb and no Python in the loop. Usage: ``post_engine_driver JOB OUTDIR``.
//
// The job (written by ``sim.native.write_job``, all words little-endian uint64):
//
//   "PAJOB001"  L  sel_bits  addr_bits  data_bits  weight_bits  max_cycles
//   n_config  {record}*n_config           written once, after reset
//   n_passes  ({count {record}*count})*n_passes
//   n_samples ({count {record}*count})*n_samples
//   n_reads   {sel addr}*n_reads
//   "PAJOBEND"
//
// A record is ``sel|flags<<8, addr, data[L]`` (``L`` words of data, least significant first). Flag
// DIRECT (1) on a WEIGHT write stores the word in the weight memory directly (no engine cycle, as the
// host port would store it: ``weight[addr] = data`` when ``addr`` is inside the memory).
// For every sample: its writes, then for every pass the pass's writes, a ``start`` pulse and a wait
// for ``done`` (its ``cycles`` output recorded), then every read. The protocol is the one of
// ``sim/cocotb_engine_tb.py``: inputs driven after the falling edge, a stream transfer happens on the
// rising edge iff valid and ready.
//
// Results in OUTDIR: ``cycles.npy`` (uint64 [samples, passes]), ``reads.npy`` (uint64
// [samples, n_reads, L]) and ``stats.json`` (simulated cycles incl. host I/O, seconds).
// Ports: Verilator spells the engine's `a__b` port names `a___05Fb`.
// Exit status: 0 ok, 2 bad job file or arguments, 3 simulation failure (timeout, protocol).

#include "Vnative_top.h"
#include "Vnative_top___024root.h"
#include "verilated.h"

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

namespace {

constexpr uint64_t kMagic = 0x313030424f4a4150ULL;     // "PAJOB001"
constexpr uint64_t kEnd = 0x444e45424f4a4150ULL;       // "PAJOBEND"
constexpr uint64_t kSelWeight = 1;
constexpr uint64_t kFlagDirect = 1;

std::string g_job_path;

[[noreturn]] void fail(int status, const std::string& msg) {
    std::fprintf(stderr, "post_engine_driver: %s\n", msg.c_str());
    std::exit(status);
}

[[noreturn]] void bad_job(const std::string& msg) {
    fail(2, "job file " + g_job_path + ": " + msg + " (rewrite it with sim.native.write_job)");
}

struct Record {
    uint64_t sel, flags, addr;
    std::vector<uint64_t> data;
};

struct Job {
    uint64_t limbs = 0, sel_bits = 0, addr_bits = 0, data_bits = 0, weight_bits = 0, max_cycles = 0;
    std::vector<Record> config;
    std::vector<std::vector<Record>> passes, samples;
    std::vector<std::pair<uint64_t, uint64_t>> reads;
};

class Reader {
  public:
    explicit Reader(std::vector<uint64_t> words) : w_(std::move(words)) {}
    uint64_t next(const char* what) {
        if (pos_ >= w_.size()) bad_job(std::string("truncated: ends inside ") + what);
        return w_[pos_++];
    }
    uint64_t count(const char* what, uint64_t words_each) {
        uint64_t n = next(what);
        if (words_each && n > (w_.size() - pos_) / words_each)
            bad_job(std::string("corrupt or truncated: ") + what + " claims " + std::to_string(n) +
                    " entries, more than the file holds");
        return n;
    }
    bool at_end() const { return pos_ == w_.size(); }

  private:
    std::vector<uint64_t> w_;
    size_t pos_ = 0;
};

std::vector<Record> read_records(Reader& r, const Job& job, uint64_t n, const char* what) {
    std::vector<Record> out(n);
    for (auto& rec : out) {
        uint64_t head = r.next(what);
        rec.sel = head & 0xff;
        rec.flags = head >> 8;
        rec.addr = r.next(what);
        if (rec.sel >> job.sel_bits) bad_job(std::string(what) + ": sel " + std::to_string(rec.sel) + " out of range");
        if (rec.flags & ~kFlagDirect) bad_job(std::string(what) + ": unknown flags " + std::to_string(rec.flags));
        if ((rec.flags & kFlagDirect) && rec.sel != kSelWeight)
            bad_job(std::string(what) + ": direct loads exist for the WEIGHT memory only");
        if (rec.addr >> job.addr_bits) bad_job(std::string(what) + ": address " + std::to_string(rec.addr) +
                                               " wider than " + std::to_string(job.addr_bits) + " bits");
        rec.data.resize(job.limbs);
        for (auto& d : rec.data) d = r.next(what);
    }
    return out;
}

Job load_job(const std::string& path) {
    std::FILE* f = std::fopen(path.c_str(), "rb");
    if (!f) fail(2, "cannot open job file " + path);
    std::fseek(f, 0, SEEK_END);
    long size = std::ftell(f);
    std::fseek(f, 0, SEEK_SET);
    if (size < 0 || size % 8) {
        std::fclose(f);
        bad_job("size " + std::to_string(size) + " is not a whole number of 64-bit words");
    }
    std::vector<uint64_t> words(size / 8);
    size_t got = std::fread(words.data(), 8, words.size(), f);
    std::fclose(f);
    if (got != words.size()) bad_job("short read");
    Reader r(std::move(words));
    if (r.next("header") != kMagic) bad_job("not a post-accel job (bad magic)");
    Job job;
    job.limbs = r.next("header");
    job.sel_bits = r.next("header");
    job.addr_bits = r.next("header");
    job.data_bits = r.next("header");
    job.weight_bits = r.next("header");
    job.max_cycles = r.next("header");
    if (job.limbs == 0 || job.limbs > 64 || job.data_bits == 0 || job.data_bits > 64 * job.limbs ||
        job.sel_bits == 0 || job.sel_bits > 8 || job.addr_bits == 0 || job.addr_bits > 32 ||
        job.weight_bits == 0 || job.weight_bits > job.data_bits || job.max_cycles == 0)
        bad_job("implausible header (limbs " + std::to_string(job.limbs) + ", widths " +
                std::to_string(job.sel_bits) + "/" + std::to_string(job.addr_bits) + "/" +
                std::to_string(job.data_bits) + ")");
    const uint64_t rec_words = 2 + job.limbs;
    job.config = read_records(r, job, r.count("config writes", rec_words), "config writes");
    uint64_t n_passes = r.count("passes", 1);
    if (n_passes == 0) bad_job("no passes (a program runs at least once)");
    for (uint64_t p = 0; p < n_passes; ++p)
        job.passes.push_back(read_records(r, job, r.count("pass writes", rec_words), "pass writes"));
    uint64_t n_samples = r.count("samples", 1);
    for (uint64_t s = 0; s < n_samples; ++s)
        job.samples.push_back(read_records(r, job, r.count("sample writes", rec_words), "sample writes"));
    uint64_t n_reads = r.count("reads", 2);
    job.reads.resize(n_reads);
    for (auto& rd : job.reads) {
        rd.first = r.next("reads");
        rd.second = r.next("reads");
        if (rd.first >> job.sel_bits || rd.second >> job.addr_bits) bad_job("read address out of range");
    }
    if (r.next("end marker") != kEnd) bad_job("corrupt (end marker missing: the counts do not match the contents)");
    if (!r.at_end()) bad_job("trailing data after the end marker");
    return job;
}

// --- bit packing into Verilator's port/memory types ----------------------------------------------

void or_bits(std::vector<uint32_t>& w, uint64_t value, uint64_t offset) {
    for (int half = 0; half < 2; ++half) {
        uint64_t v = (value >> (32 * half)) & 0xffffffffULL;
        uint64_t bit = offset + 32 * half;
        if (!v) continue;
        size_t i = bit / 32, sh = bit % 32;
        if (i < w.size()) w[i] |= static_cast<uint32_t>(v << sh);
        if (sh && i + 1 < w.size()) w[i + 1] |= static_cast<uint32_t>(v >> (32 - sh));
    }
}

uint64_t mask(uint64_t value, uint64_t bits) { return bits >= 64 ? value : value & ((1ULL << bits) - 1); }

// ``data`` (limbs) masked to ``bits`` as 32-bit words
void put_data(std::vector<uint32_t>& w, const std::vector<uint64_t>& data, uint64_t bits, uint64_t offset) {
    for (size_t i = 0; i < data.size() && 64 * i < bits; ++i) or_bits(w, mask(data[i], bits - 64 * i), offset + 64 * i);
}

template <typename T> constexpr size_t words_of(const T&) { return (sizeof(T) + 3) / 4; }
template <std::size_t N> constexpr size_t words_of(const VlWide<N>&) { return N; }

void assign(CData& d, const std::vector<uint32_t>& w) { d = static_cast<CData>(w[0]); }
void assign(SData& d, const std::vector<uint32_t>& w) { d = static_cast<SData>(w[0]); }
void assign(IData& d, const std::vector<uint32_t>& w) { d = w[0]; }
void assign(QData& d, const std::vector<uint32_t>& w) { d = w[0] | (static_cast<QData>(w.size() > 1 ? w[1] : 0) << 32); }
template <std::size_t N> void assign(VlWide<N>& d, const std::vector<uint32_t>& w) {
    for (size_t i = 0; i < N; ++i) d[i] = i < w.size() ? w[i] : 0;
}

template <typename T> void to_limbs(const T& v, uint64_t* out, size_t limbs) {
    out[0] = static_cast<uint64_t>(v);
    for (size_t i = 1; i < limbs; ++i) out[i] = 0;
}
template <std::size_t N> void to_limbs(const VlWide<N>& v, uint64_t* out, size_t limbs) {
    for (size_t i = 0; i < limbs; ++i) {
        uint64_t lo = 2 * i < N ? v[2 * i] : 0, hi = 2 * i + 1 < N ? v[2 * i + 1] : 0;
        out[i] = lo | (hi << 32);
    }
}

template <typename T, std::size_t N> constexpr size_t depth_of(const VlUnpacked<T, N>&) { return N; }

// --- the engine and the host protocol ---------------------------------------------------------

class Driver {
  public:
    Driver(const Job& job, VerilatedContext* ctx) : job_(job), top_(new Vnative_top{ctx}) {
        wr_words_ = words_of(top_->host_wr___05Fpayload);
        rq_words_ = words_of(top_->rd_req___05Fpayload);
        if (job.sel_bits + job.addr_bits + job.data_bits > 32 * wr_words_ || job.sel_bits + job.addr_bits > 32 * rq_words_ ||
            job.data_bits > 32 * words_of(top_->rd_resp___05Fpayload))
            bad_job("its widths do not match this engine build (another program's job?)");
    }
    ~Driver() { top_->final(); }

    void reset() {
        top_->clk = 0;
        top_->rst = 1;
        top_->host_wr___05Fvalid = 0;
        top_->rd_req___05Fvalid = 0;
        top_->rd_resp___05Fready = 0;
        top_->start = 0;
        top_->eval();
        for (int i = 0; i < 3; ++i) tick();
        top_->rst = 0;
        tick();
        tick();                                   // native_top registers rst once more
        sim_cycles = 0;
    }

    void write(const std::vector<Record>& recs) {
        auto& weight = top_->rootp->native_top__DOT__dut__DOT__weight;
        bool any = false;
        for (const Record& rec : recs) {
            if (rec.flags & kFlagDirect) {          // as the host port stores it, without a cycle
                if (rec.addr < depth_of(weight)) {
                    std::vector<uint32_t> w(words_of(weight[0]), 0);
                    put_data(w, rec.data, job_.weight_bits, 0);
                    assign(weight[rec.addr], w);
                }
                continue;
            }
            std::vector<uint32_t> w(wr_words_, 0);
            or_bits(w, mask(rec.sel, job_.sel_bits), 0);
            or_bits(w, mask(rec.addr, job_.addr_bits), job_.sel_bits);
            put_data(w, rec.data, job_.data_bits, job_.sel_bits + job_.addr_bits);
            assign(top_->host_wr___05Fpayload, w);
            top_->host_wr___05Fvalid = 1;
            any = true;
            uint64_t waited = 0;
            for (;;) {
                fall();
                bool accepted = top_->host_wr___05Fready;
                rise();
                if (accepted) break;
                if (++waited > job_.max_cycles) fail(3, "host write not accepted within max_cycles (engine busy?)");
            }
        }
        if (any) top_->host_wr___05Fvalid = 0;
    }

    uint64_t run_pass(size_t sample, size_t pass) {
        top_->start = 1;
        tick();
        top_->start = 0;
        if (top_->done)
            fail(3, "protocol violation: done still high the cycle after start (sample " + std::to_string(sample) + ")");
        uint64_t waited = 0;
        while (!top_->done) {
            tick();
            if (++waited > job_.max_cycles)
                fail(3, "the engine did not raise done within " + std::to_string(job_.max_cycles) + " cycles (sample " +
                            std::to_string(sample) + ", pass " + std::to_string(pass) + ")");
        }
        return top_->cycles;
    }

    void read(uint64_t* out) {
        const size_t n = job_.reads.size(), L = job_.limbs;
        size_t got = 0, issued = 0;
        uint64_t idle = 0;
        top_->rd_resp___05Fready = 1;
        while (got < n) {
            if (top_->rd_resp___05Fvalid) {          // settled after the rising edge
                to_limbs(top_->rd_resp___05Fpayload, out + got * L, L);
                ++got;
                idle = 0;
            }
            bool accepted = false;
            if (issued < n) {
                std::vector<uint32_t> w(rq_words_, 0);
                or_bits(w, mask(job_.reads[issued].first, job_.sel_bits), 0);
                or_bits(w, mask(job_.reads[issued].second, job_.addr_bits), job_.sel_bits);
                assign(top_->rd_req___05Fpayload, w);
                top_->rd_req___05Fvalid = 1;
                fall();
                accepted = top_->rd_req___05Fready;
            } else {
                top_->rd_req___05Fvalid = 0;
                fall();
            }
            rise();
            if (accepted) ++issued;
            if (++idle > job_.max_cycles) fail(3, "read responses stopped coming (" + std::to_string(got) + " of " +
                                                      std::to_string(n) + ")");
        }
        top_->rd_req___05Fvalid = 0;
    }

    uint64_t sim_cycles = 0;

  private:
    // native_top latches the engine's inputs on the falling edge (sim.native.native_wrapper), so
    // the inputs set before fall() are what the engine sees at the next rising edge, and its outputs
    // are settled for that edge after fall().
    void fall() {
        top_->clk = 0;
        top_->eval();
    }
    void rise() {
        top_->clk = 1;
        top_->eval();
        ++sim_cycles;
    }
    void tick() {
        fall();
        rise();
    }

    const Job& job_;
    std::unique_ptr<Vnative_top> top_;
    size_t wr_words_ = 0, rq_words_ = 0;
};

void write_npy(const std::string& path, const std::vector<uint64_t>& data, const std::vector<size_t>& shape) {
    std::string dims;
    for (size_t d : shape) dims += std::to_string(d) + ",";
    if (shape.size() > 1) dims.pop_back();
    std::string header = "{'descr': '<u8', 'fortran_order': False, 'shape': (" + dims + "), }";
    size_t total = 10 + header.size() + 1;
    header.append((64 - total % 64) % 64, ' ');
    header += '\n';
    std::FILE* f = std::fopen(path.c_str(), "wb");
    if (!f) fail(3, "cannot write " + path);
    const unsigned char pre[8] = {0x93, 'N', 'U', 'M', 'P', 'Y', 1, 0};
    uint16_t len = static_cast<uint16_t>(header.size());
    bool ok = std::fwrite(pre, 1, 8, f) == 8 && std::fwrite(&len, 2, 1, f) == 1 &&
              std::fwrite(header.data(), 1, header.size(), f) == header.size() &&
              std::fwrite(data.data(), 8, data.size(), f) == data.size();
    if (std::fclose(f) != 0 || !ok) fail(3, "cannot write " + path);
}

}  // namespace

int main(int argc, char** argv) {
    if (argc != 3) fail(2, "usage: post_engine_driver JOB OUTDIR");
    g_job_path = argv[1];
    const std::string outdir = argv[2];
    Job job = load_job(g_job_path);

    auto ctx = std::make_unique<VerilatedContext>();
    ctx->quiet(true);
    const size_t S = job.samples.size(), P = job.passes.size(), R = job.reads.size(), L = job.limbs;
    std::vector<uint64_t> cycles(S * P), reads(S * R * L);
    double seconds = 0;
    uint64_t sim_cycles = 0;
    {
        Driver drv(job, ctx.get());
        drv.reset();
        auto t0 = std::chrono::steady_clock::now();
        drv.write(job.config);
        for (size_t s = 0; s < S; ++s) {
            drv.write(job.samples[s]);
            for (size_t p = 0; p < P; ++p) {
                drv.write(job.passes[p]);
                cycles[s * P + p] = drv.run_pass(s, p);
            }
            drv.read(reads.data() + s * R * L);
        }
        seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
        sim_cycles = drv.sim_cycles;
    }
    write_npy(outdir + "/cycles.npy", cycles, {S, P});
    write_npy(outdir + "/reads.npy", reads, {S, R, L});
    std::FILE* f = std::fopen((outdir + "/stats.json").c_str(), "w");
    if (!f) fail(3, "cannot write " + outdir + "/stats.json");
    std::fprintf(f, "{\"samples\": %zu, \"sim_cycles\": %llu, \"seconds\": %.6f}\n", S,
                 static_cast<unsigned long long>(sim_cycles), seconds);
    std::fclose(f);
    return 0;
}
