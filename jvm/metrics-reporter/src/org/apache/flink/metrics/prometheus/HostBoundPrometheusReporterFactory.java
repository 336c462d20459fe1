package org.apache.flink.metrics.prometheus;

import org.apache.flink.metrics.reporter.MetricReporterFactory;
import org.apache.flink.util.PortRange;

import java.util.Properties;

/** {@code metrics.reporter.<name>.host} (default 127.0.0.1) and {@code .port} (a port or range). */
public class HostBoundPrometheusReporterFactory implements MetricReporterFactory {

    @Override
    public HostBoundPrometheusReporter createMetricReporter(Properties properties) {
        return new HostBoundPrometheusReporter(properties.getProperty("host", "127.0.0.1"),
                new PortRange(properties.getProperty("port", "9249")));
    }
}
