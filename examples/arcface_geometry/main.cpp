// arclight-arcface-geometry: shows what the ArcFace margin does to the embedding geometry. Trains a small
// network on Fashion-MNIST with 2-D and 3-D embeddings under softmax, CosFace and ArcFace (m = 0.1, 0.3, 0.5)
// and writes one self-contained HTML page of SVG figures plus metrics.json (see geometry.hpp, docs/ARCFACE.md).
#include <cstdio>

#include "examples/arcface_geometry/geometry.hpp"

int main(int argc, char** argv) {
  try {
    return arclight::examples::arcface_geometry::run_cli(argc, argv);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "arclight-arcface-geometry: %s\n", e.what());
    return 1;
  }
}
