/* edgeseg C API: an opaque segmenter handle over the C++ runtime, for other languages and
 * GStreamer elements. Every call returns 0 on success, non-zero on failure; the failure's
 * one-line reason (expected, got, fix) is edgeseg_last_error(), per thread.
 *
 *   edgeseg_segmenter* seg = NULL;
 *   if (edgeseg_open("bundle/", "auto", 0, &seg)) fprintf(stderr, "%s\n", edgeseg_last_error());
 *   edgeseg_segment(seg, pixels, width, height, stride, EDGESEG_BGR, 3, labels);  // labels: width*height bytes
 *   edgeseg_close(seg);
 */
#ifndef EDGESEG_EDGESEG_H
#define EDGESEG_EDGESEG_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct edgeseg_segmenter edgeseg_segmenter;

enum edgeseg_pixel_format { EDGESEG_RGB = 0, EDGESEG_BGR = 1, EDGESEG_NV12 = 2 };

const char* edgeseg_last_error(void);

/* backend: "auto", "openvino" or "tensorrt"; threads: CPU inference threads, 0 = default. */
int edgeseg_open(const char* bundle_dir, const char* backend, int threads, edgeseg_segmenter** out);
void edgeseg_close(edgeseg_segmenter* seg);

/* The backend in use ("openvino", "tensorrt"); valid while seg is open. */
const char* edgeseg_backend(const edgeseg_segmenter* seg);
int edgeseg_num_classes(const edgeseg_segmenter* seg);
/* Class name and palette colour (rgb: 3 bytes) of class i. */
int edgeseg_class_info(const edgeseg_segmenter* seg, int i, const char** name, uint8_t* rgb);

/* Frame -> class map at the frame's size (labels: width*height bytes). stride: bytes per row, 0 =
 * packed; channels must be 3 for RGB/BGR (ignored for NV12, whose UV plane follows the Y plane). */
int edgeseg_segment(edgeseg_segmenter* seg, const uint8_t* data, int width, int height, size_t stride, int format,
                    int channels, uint8_t* labels);
/* Milliseconds of the last edgeseg_segment: preprocess, infer, postprocess. */
int edgeseg_last_timing(const edgeseg_segmenter* seg, double* preprocess_ms, double* infer_ms, double* postprocess_ms);

/* The CPU pre/post-processing steps alone (no bundle needed), as the runtime runs them. */
int edgeseg_resize_bilinear_u8(const uint8_t* src, int src_h, int src_w, int channels, uint8_t* dst, int dst_h,
                               int dst_w);
int edgeseg_frame_to_rgb(const uint8_t* data, int width, int height, size_t stride, int format, uint8_t* rgb);
/* Packed RGB (h, w, 3) -> (3, h, w) float32: mean/std in the network's channel order, network_bgr 0/1. */
int edgeseg_normalize(const uint8_t* rgb, int h, int w, const float* mean, const float* std, float scale,
                      int network_bgr, float* chw);
int edgeseg_resize_logits(const float* logits, int classes, int h, int w, int out_h, int out_w, float* out);
int edgeseg_labels_from_logits(const float* logits, int classes, int h, int w, int out_h, int out_w,
                               uint8_t* labels);

#ifdef __cplusplus
}
#endif

#endif /* EDGESEG_EDGESEG_H */
