// Java written for the first release's WSDL, as a Java shop wrote it then: Apache Axis 1.4
// stubs (WSDL2Java, package com.flexiant.extility) and calls with the first release's
// arguments, `port.listVDCs()` and all. It must compile against stubs generated from that
// WSDL, and compile and run unchanged against stubs generated today from /?wsdl (version 1).
// The port is the WSDL's own soap:address. Environment: ALICE_EMAIL, ALICE_PASSWORD.
// Prints "ok: ..." per check and "all done" at the end; exits non-zero on the first failure.

import com.flexiant.extility.Disk;
import com.flexiant.extility.ExtilityBindingStub;
import com.flexiant.extility.ExtilityException;
import com.flexiant.extility.ExtilityPortType;
import com.flexiant.extility.ExtilityServiceLocator;
import com.flexiant.extility.Image;
import com.flexiant.extility.Job;
import com.flexiant.extility.Server;
import com.flexiant.extility.UsageRecord;
import com.flexiant.extility.VDC;
import com.flexiant.extility.Vlan;
import java.rmi.RemoteException;

public class AxisClientV1 {
    static void check(boolean condition, String what) {
        if (!condition) {
            System.out.println("FAILED: " + what);
            System.exit(1);
        }
        System.out.println("ok: " + what);
    }

    public static void main(String[] args) throws Exception {
        ExtilityPortType port = new ExtilityServiceLocator().getExtilityPort();
        ((ExtilityBindingStub) port).setUsername(System.getenv("ALICE_EMAIL"));
        ((ExtilityBindingStub) port).setPassword(System.getenv("ALICE_PASSWORD"));

        VDC[] vdcs = port.listVDCs();
        check(vdcs.length == 1 && "Default VDC".equals(vdcs[0].getVdc_name()), "listVDCs()");
        long vdc = vdcs[0].getVdc_id();
        Vlan vlan = port.createVLAN(vdc, "axis v1 vlan");
        check(port.listVLANs(vdc).length == 1, "createVLAN, listVLANs(vdc)");
        Image[] images = port.listImages();
        check(images.length >= 1, "listImages()");

        Server server = port.createServer(vdc, vlan.getVlan_id(), "axis v1", 66, 18,
                                          new long[] {29});
        check(server.getDisks().length == 1 && server.getStatus() == 5,
              "createServer with the first release's six arguments");
        Server again = port.getServer(server.getServer_id());
        check(again.getServer_name().equals("axis v1"), "getServer");
        Disk[] disks = port.listDisks(vdc);
        check(disks.length == 1 && disks[0].getServer_id() == server.getServer_id(),
              "listDisks(vdc)");
        check(port.listServers(vdc).length == 1, "listServers(vdc)");

        long start = port.startServer(server.getServer_id());
        Job started = port.waitForJob(start, 60);
        check(started.getStatus() == 1, "startServer, waitForJob");
        Job stopped = port.waitForJob(port.stopServer(server.getServer_id(), 2), 60);
        check(stopped.getStatus() == 1, "stopServer");
        Job[] jobs = port.listJobs();
        check(jobs.length == 2 && jobs[0].getJob_id() != start, "listJobs(), newest first");
        UsageRecord[] usage = port.listUsage(null, null);
        check(usage != null, "listUsage(null, null)");

        try {
            port.getDisk(987654321L);
            check(false, "getDisk of a disk that does not exist fails");
        } catch (ExtilityException e) {
            check("NOT_FOUND".equals(e.getErrorCode()),
                  "a fault is the typed ExtilityException: " + e.getErrorCode());
        } catch (RemoteException e) {
            check(false, "a fault is the typed ExtilityException, not " + e);
        }
        check(port.waitForJob(port.destroyServer(server.getServer_id()), 60).getStatus() == 1,
              "destroyServer");
        System.out.println("all done");
    }
}
