// Device: where a tensor's memory lives. "cpu" or "cuda:N".
#pragma once
#include <cstdint>
#include <ostream>
#include <string>
#include <utility>
#include <vector>

namespace emonext {

enum class DeviceType : uint8_t { CPU, CUDA };

struct Device {
  DeviceType type = DeviceType::CPU;
  int index = 0;

  static Device cpu() { return {}; }
  static Device cuda(int index = 0) { return {DeviceType::CUDA, index}; }

  bool is_cpu() const { return type == DeviceType::CPU; }
  bool is_cuda() const { return type == DeviceType::CUDA; }
  std::string str() const { return is_cpu() ? "cpu" : "cuda:" + std::to_string(index); }
  bool operator==(const Device& o) const { return type == o.type && (is_cpu() || index == o.index); }
  bool operator!=(const Device& o) const { return !(*this == o); }
};

inline std::ostream& operator<<(std::ostream& os, const Device& d) { return os << d.str(); }

// What the tools' --device takes: auto (the GPU when one answers), cpu or cuda.
enum class DeviceChoice { Auto, Cpu, Cuda };
const std::vector<std::pair<std::string, DeviceChoice>>& device_choices();  // the names, for the options tables
// The device a choice names; cuda where no GPU answers is an error saying why. A rank
// of a data-parallel run takes the GPU of its rank on its machine (core/dist.h).
Device pick_device(DeviceChoice choice);

// True when this build has the CUDA backend and at least one GPU answers.
bool cuda_available();
int cuda_device_count();
// Why cuda_available() is false, in words.
std::string cuda_unavailable_reason();
// Waits for all queued work on the device (a no-op on the CPU).
void synchronize(Device d);
// Kernels and cuBLAS/cuDNN calls this process has put on GPUs so far (0 without CUDA);
// see kernels::cuda::launches().
uint64_t gpu_launches();
// Times the host has waited for a GPU so far (0 without CUDA); see kernels::cuda::host_waits().
uint64_t gpu_host_waits();

}  // namespace emonext
