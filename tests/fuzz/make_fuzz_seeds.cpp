// Writes the seed corpora of the fuzz targets (committed under tests/fuzz/corpus/<target>/):
//   make_fuzz_seeds <source root> <out dir>
// Deterministic (fixed seeds), so running it again rewrites the same bytes. Valid files of each kind, plus
// the near misses that lead the fuzzer into the checks behind the first parse: for nn::load, files from
// models that do not match (names, shapes, dtypes). CSV seeds take the first lines of the bundled public-domain
// data sets (data/co2_weekly, data/sunspots_yearly).
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#include <unroll/core/checkpoint.hpp>
#include <unroll/core/random.hpp>
#include <unroll/core/safetensors.hpp>
#include <unroll/nn/serialize.hpp>

#include "../../examples/common/csv.hpp"
#include "small_model.hpp"

namespace fs = std::filesystem;
using namespace unroll;

namespace {
void write_text(const fs::path& path, const std::string& text) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << text;
  if (!out) throw IoError(fmt::format("make_fuzz_seeds: cannot write '{}'", path.string()));
}

// The first `n` lines of a text file, each ending in '\n'.
std::string head(const fs::path& path, int n) {
  std::ifstream in(path);
  if (!in) throw IoError(fmt::format("make_fuzz_seeds: cannot read '{}'", path.string()));
  std::string out, line;
  for (int i = 0; i < n && std::getline(in, line); ++i) out += line + '\n';
  return out;
}

std::string u64_le(std::uint64_t n) {
  std::string s(8, '\0');
  for (int i = 0; i < 8; ++i) s[static_cast<std::size_t>(i)] = static_cast<char>((n >> (8 * i)) & 0xff);
  return s;
}

Tensor i64_scalar(std::int64_t v) { return index_tensor(std::vector<std::int64_t>{v}, Shape{}); }

void safetensors_seeds(const fs::path& dir) {
  StateDict one;
  one.insert("w", randn({2, 3}));
  save_safetensors((dir / "f32.safetensors").string(), one);

  StateDict mixed;
  mixed.insert("weight", randn({3, 2}));
  mixed.insert("double", randn({2}, Dtype::float64));
  mixed.insert("index", index_tensor({-1, 0, 7}));
  mixed.insert("scalar", tensor({2.5}, {}, Dtype::float64));
  mixed.insert("empty", zeros({0, 4}));
  mixed.insert("deep", ones({1, 1, 1, 1, 1, 1, 1, 2}));
  save_safetensors((dir / "mixed.safetensors").string(), mixed, {{"format", "pt"}, {"note", "seed"}});

  save_safetensors((dir / "no_tensors.safetensors").string(), StateDict{});
  save_safetensors((dir / "metadata_only.safetensors").string(), StateDict{}, {{"k", "v"}});
  // Written by hand: header order differs from buffer order (b's bytes come first), as other writers may do.
  const std::string header = R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[8,12]},)"
                             R"("b":{"dtype":"I64","shape":[],"data_offsets":[0,8]}})";
  write_text(dir / "reordered.safetensors",
             u64_le(header.size()) + header + std::string("\1\0\0\0\0\0\0\0\0\0\x80\x3f", 12));
}

void checkpoint_seeds(const fs::path& dir) {
  save_checkpoint((dir / "default.safetensors").string(), Checkpoint{});
  fuzz::SmallModel model;
  StateDict optimizer, scheduler, extra;
  optimizer.insert("state.0.exp_avg", zeros({4, 3}));
  optimizer.insert("state.0.step", i64_scalar(3));
  scheduler.insert("last_epoch", i64_scalar(3));
  extra.insert("hidden", randn({1, 2, 3}));
  Generator gen(7);
  (void)gen.normal();  // leaves a spare normal in the state
  save_checkpoint((dir / "full.safetensors").string(),
                  Checkpoint{model.state_dict(), optimizer, scheduler, 123, gen.state(), {{"cell", "lstm"}}, extra});
}

void nn_load_seeds(const fs::path& dir) {
  fuzz::SmallModel model;
  nn::save(model, (dir / "model.safetensors").string());
  nn::save(model, (dir / "model_with_metadata.safetensors").string(), {{"format", "pt"}});
  fuzz::SmallModel model64(3, Dtype::float64);  // converted to float32 on load
  nn::save(model64, (dir / "model_f64.safetensors").string());
  fuzz::SmallModel wider(4);  // every rnn shape differs
  nn::save(wider, (dir / "hidden4.safetensors").string());
  nn::save(model.rnn, (dir / "rnn_only.safetensors").string());  // names lack the "rnn." prefix

  StateDict extra = model.state_dict();
  extra.insert("head.weight", randn({2, 3}));
  save_safetensors((dir / "extra_name.safetensors").string(), extra);
  StateDict missing;
  for (const auto& [name, t] : model.state_dict())
    if (name != "proj.bias") missing.insert(name, t);
  save_safetensors((dir / "missing_name.safetensors").string(), missing);
  StateDict float_steps = model.state_dict();
  *float_steps.find("steps") = zeros({1});  // a float where the int64 buffer is
  save_safetensors((dir / "float_buffer.safetensors").string(), float_steps);
}

void csv_seeds(const fs::path& source, const fs::path& dir) {
  {
    examples::CsvWriter metrics((dir / "metrics.csv").string(), {"step", "loss", "val_loss", "lr"});
    metrics.row({0, 4.17, 4.2, 0.01});
    metrics.row({50, 2.5, std::nullopt, 0.01});
    metrics.row({100, 1.875e-3, 1.9e-3, 5e-3});
    metrics.row({150, NAN, std::nullopt, 2.5e+10});
  }
  write_text(dir / "sunspots.csv", head(source / "data/sunspots_yearly/sunspots_yearly.csv", 8));
  write_text(dir / "trailing_comma.csv", "step,loss,\n1,0.5,\n2,,\n\n3,-0.25,1e-300\n");
}

void text_table_seeds(const fs::path& source, const fs::path& dir) {
  const std::string co2 = head(source / "data/co2_weekly/co2_weekly.csv", 10);
  write_text(dir / "co2.csv", co2);
  write_text(dir / "sunspots.csv", head(source / "data/sunspots_yearly/sunspots_yearly.csv", 10));
  write_text(dir / "names.csv", "name,label\nAbe,english\nBeatriz,spanish\nChen,chinese\nDvorak,czech\n");
  // CRLF line ends, blank lines and padded cells, as a file saved elsewhere may have.
  write_text(dir / "crlf.csv", "year , value\r\n\r\n1700, 5\r\n1701,11 \r\n   \r\n1702,16.5\r\n");
  write_text(dir / "bad_cell.csv", "year,value\n1700,5\n1701,abc\n1702,inf\n");
  write_text(dir / "ragged.csv", "a,b,c\n1,2,3\n4,5\n");
}
}  // namespace

int main(int argc, char** argv) {
  if (argc != 3) {
    std::fprintf(stderr, "usage: make_fuzz_seeds <source root> <out dir>\n");
    return 2;
  }
  const fs::path source = argv[1], out = argv[2];
  try {
    manual_seed(42);
    for (const char* target : {"fuzz_safetensors", "fuzz_checkpoint", "fuzz_nn_load", "fuzz_csv", "fuzz_text_table"})
      fs::create_directories(out / target);
    safetensors_seeds(out / "fuzz_safetensors");
    checkpoint_seeds(out / "fuzz_checkpoint");
    nn_load_seeds(out / "fuzz_nn_load");
    csv_seeds(source, out / "fuzz_csv");
    text_table_seeds(source, out / "fuzz_text_table");
  } catch (const std::exception& e) {
    std::fprintf(stderr, "%s\n", e.what());
    return 1;
  }
  return 0;
}
