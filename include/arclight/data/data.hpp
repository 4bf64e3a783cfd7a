// Umbrella header of arclight's data pipeline (namespace arclight::data): image decode/encode, datasets
// (in-memory IDX / Fashion-MNIST, image folders, CSV lists, subsets), augmentations and their pipeline,
// the threaded loader, and stratified k-fold / hold-out splits.
#pragma once

#include "arclight/data/csv_dataset.hpp"
#include "arclight/data/dataset.hpp"
#include "arclight/data/idx.hpp"
#include "arclight/data/image.hpp"
#include "arclight/data/image_folder.hpp"
#include "arclight/data/image_io.hpp"
#include "arclight/data/image_ops.hpp"
#include "arclight/data/loader.hpp"
#include "arclight/data/split.hpp"
#include "arclight/data/transforms.hpp"
