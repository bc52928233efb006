/* CUDA graphs for the op table's graph entries (kernels/ops.h): stream capture on the
 * context's stream, instantiation, replay, and the staleness check against the scratch
 * buffer the captured ops point into. No kernels here. */
#include <cstdlib>

#include "cuda_internal.h"

/* An instantiated graph and the scratch generation its ops were recorded against. */
struct kern_graph {
    cudaGraphExec_t exec;
    uint64_t scratch_gen;
};

int kern_cuda_graph_begin(struct kern_ctx *ctx)
{
    struct kern_cuda *cu = kern_cuda_of(ctx);
    if (!cu || cu->capturing)
        return KERN_ERR_INVALID;
    /* Thread-local mode: only this thread's unsafe calls (an allocation, a synchronisation)
     * would break the capture; other threads (the HTTP server's) are not involved. */
    if (cudaStreamBeginCapture(cu->stream, cudaStreamCaptureModeThreadLocal) != cudaSuccess) {
        (void)cudaGetLastError();
        return KERN_ERR_DEVICE;
    }
    cu->capturing = 1;
    return KERN_OK;
}

int kern_cuda_graph_end(struct kern_ctx *ctx, struct kern_graph **out)
{
    struct kern_cuda *cu = kern_cuda_of(ctx);
    if (!cu || !out || !cu->capturing)
        return KERN_ERR_INVALID;
    *out = nullptr;
    cudaGraph_t graph = nullptr;
    cudaError_t e = cudaStreamEndCapture(cu->stream, &graph);
    cu->capturing = 0;
    if (e != cudaSuccess || !graph) {
        (void)cudaGetLastError(); /* an invalidated capture: nothing was recorded */
        if (graph)
            cudaGraphDestroy(graph);
        return KERN_ERR_DEVICE;
    }
    cudaGraphExec_t exec = nullptr;
    e = cudaGraphInstantiate(&exec, graph, 0);
    cudaGraphDestroy(graph);
    if (e != cudaSuccess) {
        (void)cudaGetLastError();
        return KERN_ERR_DEVICE;
    }
    struct kern_graph *g = static_cast<struct kern_graph *>(calloc(1, sizeof *g));
    if (!g) {
        cudaGraphExecDestroy(exec);
        return KERN_ERR_NOMEM;
    }
    g->exec = exec;
    g->scratch_gen = cu->scratch_gen;
    *out = g;
    return KERN_OK;
}

int kern_cuda_graph_launch(struct kern_ctx *ctx, struct kern_graph *g)
{
    struct kern_cuda *cu = kern_cuda_of(ctx);
    if (!cu || !g || cu->capturing)
        return KERN_ERR_INVALID;
    if (g->scratch_gen != cu->scratch_gen)
        return KERN_ERR_STALE;
    return cudaGraphLaunch(g->exec, cu->stream) == cudaSuccess ? KERN_OK : KERN_ERR_DEVICE;
}

void kern_cuda_graph_destroy(struct kern_ctx *ctx, struct kern_graph *g)
{
    struct kern_cuda *cu = kern_cuda_of(ctx);
    if (!g)
        return;
    if (cu)
        cudaStreamSynchronize(cu->stream); /* a queued replay may still run */
    cudaGraphExecDestroy(g->exec);
    free(g);
}
