// Files from strangers, as the tools meet them in whole runs: a run folder someone else
// controls (links planted among its files, a training state that lies, a pair of files
// from two steps), a full disk, a FIFO where a file should be, labels and file names that
// break the formats the tools write, and a plain run whose chart once drew forever. Each
// test makes its own input and fails on the code before its fix.
#include <gtest/gtest.h>

#include <sys/resource.h>
#include <sys/stat.h>

#include <filesystem>
#include <fstream>

#include "core/base/limits.h"
#include "core/safetensors.h"
#include "models/checkpoint.h"
#include "tests/image_bytes.h"
#include "tests/test_util.h"
#include "train/amp.h"
#include "train/evaluate.h"
#include "train/run_files.h"

namespace emonext::test {
namespace {

namespace fs = std::filesystem;

// A small run's flags: 2 steps an epoch of atto at 32 x 32, no EMA (a smaller state).
const std::string kRun = " --synthetic 32 --model atto --img-size 32 --batch 16 --device cpu --workers 1 --no-ema --drop-path 0 --log-every 100";

int train(const std::string& args, std::string* out) { return run_tool(EMONEXT_TRAIN, args, out); }

std::string text_of(const std::string& path) {
  const std::vector<char> b = read_all(path);
  return {b.begin(), b.end()};
}

// A file outside the run folder that a planted link points at, and what it holds.
struct Victim {
  explicit Victim(std::string at) : path(std::move(at)) { std::ofstream(path) << kText; }
  bool untouched() const { return text_of(path) == kText; }
  static constexpr const char* kText = "someone else's file\n";
  std::string path;
};

void plant_link(const std::string& victim, const std::string& at) {
  fs::remove(at);
  fs::create_symlink(victim, at);
}

// The steps column of a run's steps.csv.
std::vector<int64_t> steps_of(const std::string& run) {
  std::vector<int64_t> out;
  std::ifstream f(run + "/steps.csv");
  std::string line;
  std::getline(f, line);
  while (std::getline(f, line)) out.push_back(std::stoll(line.substr(0, line.find(','))));
  return out;
}

// A state file with one change made by `edit`, saved over itself.
template <class Edit>
void edit_state(const std::string& path, Edit edit) {
  SafeTensors f = load_safetensors(path);
  edit(f);
  save_safetensors(path, f.tensors, f.metadata);
}

TEST(UntrustedRuns, AOneStepRunWhoseLossesAreOneUlpApartFinishes) {
  // The smoothed loss one ulp from the loss: report.html's tick loop never ended (seed 12).
  const ScratchDir d("ulp_run");
  std::string out;
  const int code = run_tool("timeout 120 " + std::string(EMONEXT_TRAIN),
                            "--synthetic 32 --model atto --img-size 48 --batch 32 --epochs 1 --device cpu --workers 1 --seed 12 --out " + d,
                            &out);
  EXPECT_EQ(code, 0) << out;
  EXPECT_NE(text_of(d + "/report.html").find("</html>"), std::string::npos);
}

TEST(UntrustedRuns, LinksPlantedInARunFolderSendNoWriteOutsideIt) {
  const ScratchDir d("links");
  const Victim victim(d + "/victim.txt");
  std::string out;
  // Links where the run's files go: refused before anything is written.
  for (const char* f : {"config.json", "metrics.csv", "steps.csv", "report.html", "last.state.safetensors"}) {
    SCOPED_TRACE(f);
    const std::string run = d + "/run_" + f;
    fs::create_directories(run);
    plant_link(victim.path, run + "/" + f);
    EXPECT_EQ(train(kRun + " --max-steps 1 --out " + run, &out), 1) << out;
    EXPECT_NE(out.find(std::string(f) + " is a symbolic link; a run's files must be its own"), std::string::npos) << out;
    EXPECT_TRUE(victim.untouched());
    // --overwrite removes the link (not its target) and runs.
    EXPECT_EQ(train(kRun + " --max-steps 1 --overwrite --out " + run, &out), 0) << out;
    EXPECT_FALSE(fs::is_symlink(run + "/" + f));
    EXPECT_TRUE(victim.untouched());
  }
  // Links where the temporary files and the write probe go: a run writes its own files.
  const std::string run = d + "/run";
  fs::create_directories(run);
  for (const char* f : {".emonext_write_test", "config.json.tmp", "metrics.csv.tmp", "steps.csv.tmp", "last.safetensors.tmp",
                        "last.state.safetensors.tmp", "best.safetensors.tmp", "best.state.safetensors.tmp", "report.html.tmp"})
    plant_link(victim.path, run + "/" + f);
  ASSERT_EQ(train(kRun + " --max-steps 3 --out " + run, &out), 0) << out;
  EXPECT_TRUE(victim.untouched());
  EXPECT_TRUE(fs::is_regular_file(fs::symlink_status(run + "/last.safetensors")));
  // A link among the run's files before a resume appends to them: refused.
  plant_link(victim.path, run + "/steps.csv");
  EXPECT_EQ(train("--resume " + run + " --max-steps 4 --device cpu --workers 1", &out), 1) << out;
  EXPECT_NE(out.find("steps.csv is a symbolic link"), std::string::npos) << out;
  EXPECT_TRUE(victim.untouched());
  // emonext_predict --explain: its probe and index.html's temporary file.
  const std::string ex = d + "/explain";
  fs::create_directories(ex);
  for (const char* f : {".emonext_write_test", "index.html.tmp", "0_face.input.png.tmp"}) plant_link(victim.path, ex + "/" + f);
  std::ofstream(d + "/face.jpg", std::ios::binary) << jpeg_bytes(48, 48);
  EXPECT_EQ(run_tool(EMONEXT_PREDICT, "--weights " + run + "/last.safetensors --device cpu --explain " + ex + " " + d + "/face.jpg", &out), 0)
      << out;
  EXPECT_TRUE(victim.untouched());
  EXPECT_NE(text_of(ex + "/index.html").find("face.jpg"), std::string::npos);
}

TEST(UntrustedRuns, AFullDiskLeavesTheLastWholePairAndTheResumeRetrainsItsSteps) {
  const ScratchDir d("full_disk");
  std::string out;
  ASSERT_EQ(train(kRun + " --max-steps 2 --out " + d, &out), 0) << out;
  EXPECT_EQ(load_safetensors_metadata(d + "/last.safetensors").at("step"), "2");
  // Files past 20 MB fail to grow (the weights are 15 MB, their state 30 MB): step 3's
  // weights are written in full, its state is not. Neither of step 3's files may replace
  // step 2's, and the run says why it stopped.
  const int code = run_tool("trap '' XFSZ; ulimit -f 20000; exec " + std::string(EMONEXT_TRAIN),
                            "--resume " + d + " --max-steps 3 --device cpu --workers 1", &out);
  EXPECT_EQ(code, 1) << out;
  EXPECT_NE(out.find("write failed (disk full?)"), std::string::npos) << out;
  EXPECT_EQ(load_safetensors_metadata(d + "/last.safetensors").at("step"), "2");
  EXPECT_EQ(load_safetensors_metadata(d + "/last.state.safetensors").at("step"), "2");
  for (const auto& e : fs::directory_iterator(d.path())) EXPECT_NE(e.path().extension(), ".tmp") << e.path();
  // With room again: the run goes on from step 2, and step 3 appears once in the log.
  ASSERT_EQ(train("--resume " + d + " --max-steps 3 --device cpu --workers 1", &out), 0) << out;
  EXPECT_NE(out.find("resumed from " + d.path() + " at step 2"), std::string::npos) << out;
  EXPECT_EQ(steps_of(d), (std::vector<int64_t>{1, 2, 3}));
  // Step 2's state beside step 3's weights (a crash between the two renames) is no pair.
  ASSERT_EQ(train(kRun + " --max-steps 2 --out " + d + "/b", &out), 0) << out;
  fs::copy_file(d + "/b/last.state.safetensors", d + "/last.state.safetensors", fs::copy_options::overwrite_existing);
  EXPECT_EQ(train("--resume " + d + " --max-steps 4 --device cpu --workers 1", &out), 1) << out;
  EXPECT_NE(out.find("last.state.safetensors is the training state of step 2 but the weights beside it are of step 3"), std::string::npos)
      << out;
}

TEST(UntrustedRuns, ATrainingStateThatLiesIsRefused) {
  const ScratchDir d("lying_state");
  std::string out;
  ASSERT_EQ(train(kRun + " --max-steps 2 --out " + d + "/run", &out), 0) << out;
  const std::string state = d + "/run/last.state.safetensors";
  const auto moment = [&](const char* kind) {  // the first moment tensor of a kind
    for (const auto& [name, t] : load_safetensors(state).tensors)
      if (name.starts_with(std::string(kind) + ".")) return name;
    return std::string();
  };
  const std::string m = moment("exp_avg"), v = moment("exp_avg_sq");
  const std::vector<std::tuple<std::string, std::function<void(SafeTensors&)>, std::string>> lies = {
      {"a negative second moment (trained to NaN weights)",
       [&](SafeTensors& f) {
         for (auto& [n, t] : f.tensors)
           if (n == v) t = Tensor::full(t.shape(), -1.0);
       },
       "'" + v + "' holds -1 at element 0 (a second moment is finite and not negative)"},
      {"a NaN first moment",
       [&](SafeTensors& f) {
         for (auto& [n, t] : f.tensors)
           if (n == m) t = Tensor::full(t.shape(), std::nan(""));
       },
       "'" + m + "' holds nan at element 0 (it must be finite)"},
      {"a scalar moment (it was broadcast)",
       [&](SafeTensors& f) {
         for (auto& [n, t] : f.tensors)
           if (n == m) t = Tensor::from_vector({0.5}, {});
       },
       "'" + m + "' is f32[], not the run's f32["},
      {"a step count the next resume would refuse",
       [&](SafeTensors& f) { f.metadata["adam_steps"] = "9223372036854775807"; },
       "'adam_steps': 9223372036854775807 is out of range [0, 4503599627370496]"},
      {"a best accuracy past 1", [&](SafeTensors& f) { f.metadata["best_accuracy"] = "7"; }, "'best_accuracy' must be in [-1, 1]"},
  };
  for (const auto& [what, edit, says] : lies) {
    SCOPED_TRACE(what);
    fs::remove_all(d + "/lie");
    fs::copy(d + "/run", d + "/lie");
    edit_state(d + "/lie/last.state.safetensors", edit);
    EXPECT_EQ(train("--resume " + d + "/lie --max-steps 3 --device cpu --workers 1", &out), 1) << out;
    EXPECT_NE(out.find(says), std::string::npos) << out;
  }
}

TEST(UntrustedRuns, SettingsAreCheckedAgainstTheCheckpointBeforeAModelIsBuilt) {
  // An atto checkpoint beside a state whose settings say xlarge: building xlarge and its
  // optimiser (5.6 GB) before the weights were refused. Both files made here, so the
  // resume is this test's only child process and its peak memory is the child's.
  const ScratchDir d("settings_first");
  EmoNeXt model(convnext_size("atto"), 7, 32);
  save_checkpoint(d + "/last.safetensors", model, fer2013_labels(), {{"step", "2"}});
  TrainConfig c;
  c.model = "xlarge", c.image_size = 32, c.synthetic = 32, c.ema = false;
  AdamW opt(model, {});
  const SafeTensors state = run_state_of(c, opt, nullptr, RunState{.step = 2}, LossScaler{});
  save_safetensors(d + "/last.state.safetensors", state.tensors, state.metadata);
  std::string out;
  EXPECT_EQ(train("--resume " + d + " --device cpu --workers 1", &out), 1) << out;
  EXPECT_NE(out.find("last.safetensors: holds EmoNeXt-atto for 7 classes at 32, not xlarge / 7 / 32"), std::string::npos) << out;
  rusage children{};
  getrusage(RUSAGE_CHILDREN, &children);
  EXPECT_LT(children.ru_maxrss, 1000 * 1000) << "KiB at the child's peak";
  // Synthetic sizes are bounded, given or restored (2^24 images built 40 GB).
  EXPECT_EQ(train(kRun + " --synthetic 16777216 --out " + d + "/s", &out), 2) << out;
  EXPECT_NE(out.find("--synthetic must be in [0, 1048576], got 16777216"), std::string::npos) << out;
  edit_state(d + "/last.state.safetensors", [](SafeTensors& f) { f.metadata["setting.synthetic"] = "16777216"; });
  EXPECT_EQ(train("--resume " + d + " --device cpu", &out), 1) << out;
  EXPECT_NE(out.find("a saved setting is out of range: --synthetic must be in [0, 1048576]"), std::string::npos) << out;
}

TEST(UntrustedRuns, AFifoWhereAFileShouldBeIsRefusedNotWaitedOn) {
  const ScratchDir d("fifo");
  ASSERT_EQ(::mkfifo((d + "/pipe").c_str(), 0600), 0);
  std::string out;
  EXPECT_EQ(run_tool("timeout 30 " + std::string(EMONEXT_TRAIN), "--csv " + d + "/pipe --device cpu --out " + d + "/run", &out), 1) << out;
  EXPECT_NE(out.find(d + "/pipe: not a file"), std::string::npos) << out;
  EXPECT_EQ(run_tool("timeout 30 " + std::string(EMONEXT_CONVNEXT_IMPORT), "--in " + d + "/pipe --out " + d + "/w.safetensors", &out), 1)
      << out;
  EXPECT_NE(out.find(d + "/pipe: not a file"), std::string::npos) << out;
}

// Labels with every character the formats treat specially (a checkpoint's labels are
// comma-separated text in its metadata, so no comma).
const std::vector<std::string> kOddLabels = {"q\"uote", "back\\slash", "new\nline", "<tag>&amp;", "tab\there", "ctl\x01x", "it's"};

TEST(UntrustedRuns, LabelsAndNamesFromFilesComeOutValidInJsonCsvAndHtml) {
  const ScratchDir d("odd_labels");
  EmoNeXt model(convnext_size("atto"), 7, 32);
  save_checkpoint(d + "/odd.safetensors", model, kOddLabels);
  std::ofstream(d + "/face.jpg", std::ios::binary) << jpeg_bytes(48, 48);
  // --json: every line parses, and its labels are the checkpoint's.
  int code = 0;
  const std::string json = run_command(std::string(EMONEXT_PREDICT) + " --weights " + d + "/odd.safetensors --device cpu --json " + d +
                                           "/face.jpg 2>/dev/null",
                                       &code);
  ASSERT_EQ(code, 0);
  std::ofstream(d + "/lines.json", std::ios::binary) << json;
  std::ofstream(d + "/check.py") << "import json, sys\n"
                                    "labels = {'q\"uote', 'back\\\\slash', 'new\\nline', '<tag>&amp;', 'tab\\there', 'ctl\\x01x', \"it's\"}\n"
                                    "rows = [json.loads(l) for l in open(sys.argv[1], encoding='utf-8')]\n"
                                    "assert len(rows) == 1 and set(rows[0]['probabilities']) == labels and rows[0]['label'] in labels, rows\n";
  std::string out;
  EXPECT_EQ(run_tool("/usr/bin/python3", d + "/check.py " + d + "/lines.json", &out), 0) << out << json;
  // --explain's page: the labels as text, not markup.
  ASSERT_EQ(run_tool(EMONEXT_PREDICT, "--weights " + d + "/odd.safetensors --device cpu --explain " + d + "/ex " + d + "/face.jpg", &out), 0)
      << out;
  const std::string page = text_of(d + "/ex/index.html");
  EXPECT_EQ(page.find("<tag>"), std::string::npos);
  EXPECT_NE(page.find("&lt;tag&gt;&amp;amp;"), std::string::npos);
  EXPECT_EQ(page.find('\x01'), std::string::npos);
  // A confusion matrix's CSV: the labels as fields a CSV reader gives back.
  Evaluation e;
  e.confusion.assign(7, std::vector<int64_t>(7, 1));
  write_confusion_csv(d + "/confusion.csv", e, kOddLabels);
  std::ofstream(d + "/check_csv.py") << "import csv, sys\n"
                                  "rows = list(csv.reader(open(sys.argv[1], newline='', encoding='utf-8')))\n"
                                  "assert rows[0][1:8] == ['q\"uote', 'back\\\\slash', 'new\\nline', '<tag>&amp;', 'tab\\there', 'ctl\\x01x', \"it's\"], rows[0]\n"
                                  "assert [r[0] for r in rows[1:]] == rows[0][1:8] and len(rows) == 8, rows\n";
  EXPECT_EQ(run_tool("/usr/bin/python3", d + "/check_csv.py " + d + "/confusion.csv", &out), 0) << out;
}

TEST(UntrustedRuns, OneOddEntryInAFolderIsSkippedNotTheWholeCommand) {
  // A 250-byte file name (its pictures' names would pass the file system's 255) and a
  // link to itself (whose type cannot be told) ended a whole --explain or --evaluate.
  const ScratchDir d("odd_entries");
  EmoNeXt model(convnext_size("atto"), 7, 32);
  save_checkpoint(d + "/m.safetensors", model, fer2013_labels());
  for (const std::string& emotion : fer2013_labels()) {
    fs::create_directories(d + "/val/" + emotion);
    std::ofstream(d + "/val/" + emotion + "/" + std::string(246, 'x') + ".jpg", std::ios::binary) << jpeg_bytes(40, 40);
    fs::create_symlink("loop.jpg", d + "/val/" + emotion + "/loop.jpg");
  }
  std::string out;
  EXPECT_EQ(run_tool(EMONEXT_PREDICT, "--weights " + d + "/m.safetensors --device cpu --explain " + d + "/ex " + d + "/val", &out), 0) << out;
  EXPECT_NE(text_of(d + "/ex/index.html").find(std::string(246, 'x')), std::string::npos);
  EXPECT_EQ(run_tool(EMONEXT_PREDICT, "--weights " + d + "/m.safetensors --device cpu --evaluate " + d + "/val", &out), 0) << out;
  EXPECT_NE(out.find("7 images, accuracy"), std::string::npos) << out;
}

TEST(UntrustedRuns, KernelBenchBoundsItsShapeAndChecksItsOutputFirst) {
  std::string out;
  EXPECT_EQ(run_tool(EMONEXT_KERNEL_BENCH, "--device cpu --shape 1048576,1048576,1048576,1048576", &out), 2) << out;
  EXPECT_NE(out.find("--shape: size overflows"), std::string::npos) << out;
  EXPECT_EQ(run_tool(EMONEXT_KERNEL_BENCH, "--device cpu --shape 64,512,512,96", &out), 2) << out;
  EXPECT_NE(out.find("N*H*W*4C is 6442450944 elements, more than the 536870912"), std::string::npos) << out;
  EXPECT_EQ(run_tool(EMONEXT_KERNEL_BENCH, "--device cpu --html /proc/no-such/dir/roofline.html", &out), 2) << out;
  EXPECT_NE(out.find("--html: /proc/no-such/dir/roofline.html.tmp: cannot open for writing"), std::string::npos) << out;
  EXPECT_EQ(out.find("measured copy bandwidth"), std::string::npos) << "refused before the benchmark\n" << out;
}

}  // namespace
}  // namespace emonext::test
