# The C runtime of mamext.export.to_c includes csrc/common/mam_semantics.h, the
# header the CPU and CUDA kernels are compiled from. Install that very file as
# package data beside the runtime's other headers, so an exported network
# obeys the same text. (A source checkout used in place reads it from
# csrc/common/ directly.)
install(FILES "${CMAKE_CURRENT_LIST_DIR}/../csrc/common/mam_semantics.h"
        DESTINATION mamext/export/runtime)
