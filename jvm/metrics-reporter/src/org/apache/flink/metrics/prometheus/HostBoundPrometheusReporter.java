package org.apache.flink.metrics.prometheus;

import io.prometheus.client.exporter.HTTPServer;
import org.apache.flink.util.PortRange;

import java.io.IOException;
import java.net.InetSocketAddress;
import java.util.Iterator;

/**
 * Flink's PrometheusReporter, listening on one host address instead of every interface.
 *
 * <p>Flink 2.2's reporter has no host option. In this package because the collector registry
 * of {@link AbstractPrometheusReporter} is package-private.
 */
public class HostBoundPrometheusReporter extends AbstractPrometheusReporter {

    private final HTTPServer httpServer;

    HostBoundPrometheusReporter(String host, PortRange ports) {
        HTTPServer server = null;
        Iterator<Integer> candidates = ports.getPortsIterator();
        while (server == null && candidates.hasNext()) {
            int port = candidates.next();
            try {
                server = new HTTPServer(new InetSocketAddress(host, port), registry);
                log.info("Started PrometheusReporter HTTP server on {}:{}.", host, port);
            } catch (IOException busy) {
                log.debug("Could not start PrometheusReporter HTTP server on {}:{}.", host, port, busy);
            }
        }
        if (server == null) {
            throw new RuntimeException("Could not start PrometheusReporter HTTP server on " + host
                    + " on any configured port. Ports: " + ports);
        }
        httpServer = server;
    }

    @Override
    public void close() {
        httpServer.stop();
        super.close();
    }
}
