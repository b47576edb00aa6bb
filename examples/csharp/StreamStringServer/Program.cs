// A server for npipes' framing="dotnet": the StreamString helper of Microsoft's
// named-pipe sample (../Shared/Npipes.cs): a 2-byte big-endian byte count, then the
// string in UTF-16LE.
//
//   StreamStringServer NAME   creates the pipe, prints "ready", serves one client:
//                             sends each string back; exits when the client closes
//
// NAME: the .NET pipe name ("demo"; \\.\pipe\demo on Windows). On Linux/macOS .NET
// makes it the socket $TMPDIR/CoreFxPipe_demo: the npipes side uses dotnet=True.
using System;
using System.IO;

static class Program
{
    static int Main(string[] args)
    {
        if (args.Length != 1)
        {
            Console.Error.WriteLine("usage: StreamStringServer NAME");
            return 2;
        }
        try
        {
            using (var pipe = Pipes.Listen(args[0]))
            using (var stdout = Console.OpenStandardOutput())
            {
                Pipes.PrintLine(stdout, "ready"); // the pipe exists from here on
                pipe.WaitForConnection();
                var ss = new StreamString(pipe);
                int count = 0;
                for (string s; (s = ss.ReadString()) != null; count++) ss.WriteString(s);
                Pipes.PrintLine(stdout, "echoed " + count);
                return 0;
            }
        }
        catch (Exception e) when (e is IOException || e is UnauthorizedAccessException || e is ArgumentException)
        {
            Console.Error.WriteLine("StreamStringServer: " + e.Message);
            return 1;
        }
    }
}
