// Runs a TorchScript file written by `mobilevt export` with libtorch alone: no Python, no
// torchvision. Build with build.sh (next to this file); see README.md there.
//
//   mobilevt_run classify MODEL.pt|MODEL.ptl IMAGE.ppm [--labels FILE] [--dump PREFIX] [--runs N]
//       a classifier exported with --include-preprocessing: uint8 [H, W, 3] pixels in,
//       logits out; prints the top-5 (with names from FILE, one per line)
//   mobilevt_run tensor MODEL.pt INPUT.bin [--dump PREFIX] [--runs N]
//       any model taking one float32 tensor (segmenter, detector, classifier without
//       preprocessing); prints the shape of each output
//   mobilevt_run vqa MODEL.pt IMAGE.ppm QUESTION [--topk K] [--runs N]
//       the VQA pipeline: image and question in, answers with their scores out
//
// --threads N sets libtorch's intra-op threads (default: libtorch's own choice, the number of
// physical cores, which is 1 on a 2-vCPU machine whose vCPUs are one core's two hyperthreads).
//
// Images are binary PPM (P6, 8 bit): any image library or `convert x.jpg x.ppm` writes it.
// Tensors (INPUT.bin, PREFIX.<i>.bin) are raw: one text line "float32 d0 d1 ...", then the
// values, little-endian, row-major.
#include <ATen/Parallel.h>
#include <torch/csrc/jit/mobile/import.h>
#include <torch/script.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <fstream>
#include <functional>
#include <memory>
#include <iomanip>
#include <iostream>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

namespace {

using Forward = std::function<c10::IValue(std::vector<c10::IValue>)>;

// A TorchScript file (.pt, torch::jit::load) or a lite-interpreter file (.ptl, the runtime
// of PyTorch Mobile apps), as one forward function.
Forward load_model(const std::string& path) {
  if (path.size() > 4 && path.substr(path.size() - 4) == ".ptl") {
    auto module = std::make_shared<torch::jit::mobile::Module>(torch::jit::_load_for_mobile(path));
    return [module](std::vector<c10::IValue> inputs) { return module->forward(std::move(inputs)); };
  }
  auto module = std::make_shared<torch::jit::Module>(torch::jit::load(path));
  module->eval();
  return [module](std::vector<c10::IValue> inputs) { return module->forward(std::move(inputs)); };
}

torch::Tensor read_ppm(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw std::runtime_error("cannot open " + path);
  std::string magic;
  int64_t width = 0, height = 0, maxval = 0;
  in >> magic;
  auto skip_comments = [&in] {
    in >> std::ws;
    while (in.peek() == '#') {
      std::string line;
      std::getline(in, line);
      in >> std::ws;
    }
  };
  skip_comments();
  in >> width;
  skip_comments();
  in >> height;
  skip_comments();
  in >> maxval;
  in.get();  // the one whitespace byte before the pixels
  if (magic != "P6" || maxval != 255 || width <= 0 || height <= 0)
    throw std::runtime_error(path + ": not an 8-bit binary PPM (P6, maxval 255)");
  auto image = torch::empty({height, width, 3}, torch::kUInt8);
  in.read(reinterpret_cast<char*>(image.data_ptr<uint8_t>()), image.numel());
  if (!in) throw std::runtime_error(path + ": truncated pixel data");
  return image;
}

torch::Tensor read_raw(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw std::runtime_error("cannot open " + path);
  std::string header;
  std::getline(in, header);
  std::istringstream fields(header);
  std::string dtype;
  fields >> dtype;
  if (dtype != "float32") throw std::runtime_error(path + ": expected a float32 tensor header");
  std::vector<int64_t> shape;
  for (int64_t size; fields >> size;) shape.push_back(size);
  auto tensor = torch::empty(shape, torch::kFloat32);
  in.read(reinterpret_cast<char*>(tensor.data_ptr<float>()), tensor.numel() * sizeof(float));
  if (!in) throw std::runtime_error(path + ": truncated tensor data");
  return tensor;
}

void write_raw(const std::string& path, const torch::Tensor& value) {
  auto tensor = value.to(torch::kFloat32).contiguous();
  std::ofstream out(path, std::ios::binary);
  out << "float32";
  for (auto size : tensor.sizes()) out << ' ' << size;
  out << '\n';
  out.write(reinterpret_cast<const char*>(tensor.data_ptr<float>()), tensor.numel() * sizeof(float));
}

std::vector<torch::Tensor> tensors_of(const c10::IValue& output) {
  if (output.isTensor()) return {output.toTensor()};
  std::vector<torch::Tensor> tensors;
  for (const auto& element : output.toTupleRef().elements()) tensors.push_back(element.toTensor());
  return tensors;
}

// Runs `forward` `runs` times after one warm-up and returns the last output and the median
// latency in milliseconds.
template <typename Forward>
std::pair<c10::IValue, double> timed(Forward forward, int runs) {
  c10::IValue output = forward();
  std::vector<double> times;
  for (int i = 0; i < runs; ++i) {
    auto start = std::chrono::steady_clock::now();
    output = forward();
    times.push_back(std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count());
  }
  std::sort(times.begin(), times.end());
  return {output, times.empty() ? 0.0 : times[times.size() / 2]};
}

std::string option(const std::vector<std::string>& args, const std::string& name, const std::string& fallback) {
  auto found = std::find(args.begin(), args.end(), name);
  if (found == args.end()) return fallback;
  if (found + 1 == args.end()) throw std::runtime_error(name + " needs a value");
  return *(found + 1);
}

std::vector<std::string> read_lines(const std::string& path) {
  std::vector<std::string> lines;
  if (path.empty()) return lines;
  std::ifstream in(path);
  if (!in) throw std::runtime_error("cannot open " + path);
  for (std::string line; std::getline(in, line);) lines.push_back(line);
  return lines;
}

void dump(const std::string& prefix, const std::vector<torch::Tensor>& outputs) {
  if (prefix.empty()) return;
  for (size_t i = 0; i < outputs.size(); ++i) write_raw(prefix + "." + std::to_string(i) + ".bin", outputs[i]);
}

int classify(const Forward& model, const std::vector<std::string>& args) {
  auto image = read_ppm(args.at(3));
  int runs = std::stoi(option(args, "--runs", "0"));
  auto [output, latency] = timed([&] { return model({image}); }, runs);
  auto logits = output.toTensor().reshape({-1});
  auto labels = read_lines(option(args, "--labels", ""));
  auto [values, indices] = logits.softmax(0).topk(std::min<int64_t>(5, logits.numel()));
  for (int64_t i = 0; i < indices.numel(); ++i) {
    int64_t index = indices[i].item<int64_t>();
    std::string name = index < static_cast<int64_t>(labels.size()) ? labels[index] : std::to_string(index);
    std::cout << std::fixed << std::setprecision(4) << values[i].item<float>() << '\t' << index << '\t' << name
              << '\n';
  }
  if (runs > 0) std::cout << "latency_ms\t" << latency << '\n';
  dump(option(args, "--dump", ""), {output.toTensor()});
  return 0;
}

int tensor(const Forward& model, const std::vector<std::string>& args) {
  auto input = read_raw(args.at(3));
  int runs = std::stoi(option(args, "--runs", "0"));
  auto [output, latency] = timed([&] { return model({input}); }, runs);
  auto outputs = tensors_of(output);
  for (const auto& value : outputs) std::cout << "output\t" << value.sizes() << '\n';
  if (runs > 0) std::cout << "latency_ms\t" << std::fixed << std::setprecision(4) << latency << '\n';
  dump(option(args, "--dump", ""), outputs);
  return 0;
}

int vqa(const Forward& model, const std::vector<std::string>& args) {
  auto image = read_ppm(args.at(3));
  const std::string& question = args.at(4);
  int64_t top_k = std::stoll(option(args, "--topk", "5"));
  int runs = std::stoi(option(args, "--runs", "0"));
  auto [output, latency] = timed([&] { return model({image, question, top_k}); }, runs);
  for (const auto& row : output.toListRef()) {
    const auto& pair = row.toTupleRef().elements();
    std::cout << std::fixed << std::setprecision(6) << pair[1].toDouble() << '\t' << pair[0].toStringRef() << '\n';
  }
  if (runs > 0) std::cout << "latency_ms\t" << std::setprecision(4) << latency << '\n';
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  std::vector<std::string> args(argv, argv + argc);
  if (args.size() < 4 || (args[1] == "vqa" && args.size() < 5)) {
    std::cerr << "usage: mobilevt_run classify|tensor MODEL.pt INPUT [options] | vqa MODEL.pt IMAGE.ppm QUESTION\n";
    return 2;
  }
  try {
    c10::InferenceMode inference_mode;  // no autograd bookkeeping, as torch.inference_mode() in Python
    if (auto threads = option(args, "--threads", ""); !threads.empty()) at::set_num_threads(std::stoi(threads));
    auto model = load_model(args[2]);
    if (args[1] == "classify") return classify(model, args);
    if (args[1] == "tensor") return tensor(model, args);
    if (args[1] == "vqa") return vqa(model, args);
    std::cerr << "error: unknown command " << args[1] << " (classify, tensor or vqa)\n";
    return 2;
  } catch (const std::exception& error) {
    std::string message = error.what();
    std::cerr << "error: " << message.substr(0, message.find('\n')) << '\n';
    return 1;
  }
}
