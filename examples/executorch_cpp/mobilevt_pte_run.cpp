// Runs a .pte file written by `mobilevt export --format executorch` in the ExecuTorch
// runtime that Android and iOS apps link, with the XNNPACK backend and the CPU kernels
// registered: no Python. Build with build.sh (next to this file).
//
//   mobilevt_pte_run MODEL.pte INPUT.bin [INPUT2.bin ...] [--dump PREFIX] [--runs N]
//
// Inputs are float32 tensors, or int64 (token ids) with an "int64" header, in the raw format
// of ../cpp/mobilevt_run: one text line "float32 d0 d1 ...", then the values, little-endian,
// row-major. Each output tensor is written to PREFIX.<i>.bin in the same format (as float32).
#include <executorch/extension/data_loader/file_data_loader.h>
#include <executorch/runtime/core/exec_aten/exec_aten.h>
#include <executorch/runtime/executor/method.h>
#include <executorch/runtime/executor/program.h>
#include <executorch/runtime/platform/runtime.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <fstream>
#include <iomanip>
#include <iostream>
#include <memory>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

namespace {

using executorch::aten::ScalarType;
using executorch::aten::SizesType;
using executorch::aten::Tensor;
using executorch::aten::TensorImpl;
using executorch::extension::FileDataLoader;
using executorch::runtime::EValue;
using executorch::runtime::Error;
using executorch::runtime::HierarchicalAllocator;
using executorch::runtime::MemoryAllocator;
using executorch::runtime::MemoryManager;
using executorch::runtime::Method;
using executorch::runtime::Program;
using executorch::runtime::Span;

// One input tensor and the storage that its TensorImpl points into.
struct HostTensor {
  ScalarType dtype = ScalarType::Float;
  std::vector<SizesType> sizes;
  std::vector<uint8_t> bytes;
  std::unique_ptr<TensorImpl> impl;
};

void check(Error error, const std::string& what) {
  if (error != Error::Ok) throw std::runtime_error(what + " failed (ExecuTorch error " +
                                                   std::to_string(static_cast<int>(error)) + ")");
}

HostTensor read_raw(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw std::runtime_error("cannot open " + path);
  std::string header, dtype;
  std::getline(in, header);
  std::istringstream fields(header);
  fields >> dtype;
  HostTensor tensor;
  size_t element = 4;
  if (dtype == "int64") {
    tensor.dtype = ScalarType::Long;
    element = 8;
  } else if (dtype != "float32") {
    throw std::runtime_error(path + ": expected a float32 or int64 tensor header");
  }
  size_t count = 1;
  for (int64_t size; fields >> size;) {
    tensor.sizes.push_back(static_cast<SizesType>(size));
    count *= static_cast<size_t>(size);
  }
  tensor.bytes.resize(count * element);
  in.read(reinterpret_cast<char*>(tensor.bytes.data()), static_cast<std::streamsize>(tensor.bytes.size()));
  if (!in) throw std::runtime_error(path + ": truncated tensor data");
  tensor.impl = std::make_unique<TensorImpl>(tensor.dtype, static_cast<ssize_t>(tensor.sizes.size()),
                                             tensor.sizes.data(), tensor.bytes.data());
  return tensor;
}

void write_raw(const std::string& path, const Tensor& tensor) {
  std::ofstream out(path, std::ios::binary);
  out << "float32";
  for (auto size : tensor.sizes()) out << ' ' << size;
  out << '\n';
  std::vector<float> values(tensor.numel());
  if (tensor.scalar_type() == ScalarType::Float) {
    std::copy_n(tensor.const_data_ptr<float>(), values.size(), values.begin());
  } else if (tensor.scalar_type() == ScalarType::Long) {
    std::copy_n(tensor.const_data_ptr<int64_t>(), values.size(), values.begin());
  } else if (tensor.scalar_type() == ScalarType::Bool) {
    std::copy_n(tensor.const_data_ptr<bool>(), values.size(), values.begin());
  } else {
    throw std::runtime_error("output of an unsupported dtype");
  }
  out.write(reinterpret_cast<const char*>(values.data()), static_cast<std::streamsize>(values.size() * 4));
}

std::string option(std::vector<std::string>& args, const std::string& name, const std::string& fallback) {
  auto found = std::find(args.begin(), args.end(), name);
  if (found == args.end()) return fallback;
  if (found + 1 == args.end()) throw std::runtime_error(name + " needs a value");
  std::string value = *(found + 1);
  args.erase(found, found + 2);
  return value;
}

int run(std::vector<std::string> args) {
  std::string prefix = option(args, "--dump", "");
  int runs = std::stoi(option(args, "--runs", "0"));
  auto loader = FileDataLoader::from(args.at(1).c_str());
  if (!loader.ok()) throw std::runtime_error("cannot open " + args[1]);
  auto program = Program::load(&loader.get());
  if (!program.ok()) throw std::runtime_error(args[1] + " is not an ExecuTorch program");
  auto meta = program->method_meta("forward");
  if (!meta.ok()) throw std::runtime_error(args[1] + " has no forward method");
  // the buffers the memory planner sized at export time, and a pool for the method itself
  std::vector<std::unique_ptr<uint8_t[]>> planned;
  std::vector<Span<uint8_t>> spans;
  for (size_t i = 0; i < meta->num_memory_planned_buffers(); ++i) {
    size_t size = static_cast<size_t>(meta->memory_planned_buffer_size(i).get());
    planned.push_back(std::make_unique<uint8_t[]>(size));
    spans.emplace_back(planned.back().get(), size);
  }
  HierarchicalAllocator planned_memory({spans.data(), spans.size()});
  std::vector<uint8_t> pool(64 * 1024 * 1024);
  MemoryAllocator method_allocator(static_cast<uint32_t>(pool.size()), pool.data());
  MemoryManager memory(&method_allocator, &planned_memory);
  auto method = program->load_method("forward", &memory);
  if (!method.ok()) throw std::runtime_error("loading the forward method failed (is its backend linked?)");

  std::vector<HostTensor> inputs;
  for (size_t i = 2; i < args.size(); ++i) inputs.push_back(read_raw(args[i]));
  if (inputs.size() != method->inputs_size())
    throw std::runtime_error("the program takes " + std::to_string(method->inputs_size()) + " inputs, got " +
                             std::to_string(inputs.size()));
  std::vector<double> times;
  for (int i = 0; i <= runs; ++i) {  // the first run is the warm-up
    for (size_t k = 0; k < inputs.size(); ++k) check(method->set_input(EValue(Tensor(inputs[k].impl.get())), k), "set_input");
    auto start = std::chrono::steady_clock::now();
    check(method->execute(), "execute");
    if (i > 0) times.push_back(std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count());
  }
  for (size_t i = 0; i < method->outputs_size(); ++i) {
    const EValue& output = method->get_output(i);
    if (!output.isTensor()) continue;
    std::cout << "output\t" << i << '\t' << output.toTensor().numel() << '\n';
    if (!prefix.empty()) write_raw(prefix + "." + std::to_string(i) + ".bin", output.toTensor());
  }
  if (!times.empty()) {
    std::sort(times.begin(), times.end());
    std::cout << "latency_ms\t" << std::fixed << std::setprecision(4) << times[times.size() / 2] << '\n';
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  std::vector<std::string> args(argv, argv + argc);
  if (args.size() < 3) {
    std::cerr << "usage: mobilevt_pte_run MODEL.pte INPUT.bin [INPUT2.bin ...] [--dump PREFIX] [--runs N]\n";
    return 2;
  }
  executorch::runtime::runtime_init();
  try {
    return run(args);
  } catch (const std::exception& error) {
    std::string message = error.what();
    std::cerr << "error: " << message.substr(0, message.find('\n')) << '\n';
    return 1;
  }
}
